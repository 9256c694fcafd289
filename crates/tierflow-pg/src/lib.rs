//! A private PostgreSQL server run from the machine's own server binaries.
//!
//! Used two ways: as tierflow's embedded default (no `DATABASE_URL`: a server in a data folder
//! that persists between runs) and by tests that must stop or restart a server without touching
//! the shared one. [`Server::start`] finds the binaries (`pg_config --bindir`, the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`), runs `initdb` when the folder is new, starts
//! `postgres` on a free loopback port, and stops it on drop — unless it found a server already
//! running on that folder (another tierflow process), which it then shares and leaves running.
//!
//! PostgreSQL refuses to run as root; as root the server runs as the `postgres` system user (via
//! `runuser`), in a folder that user owns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a private server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL server binaries found (looked at `pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH); \
         install them (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error("cannot prepare the data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("no free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
}

/// A running private server.
pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Whether this handle started the server (and so stops it on drop).
    owned: bool,
}

impl Server {
    /// Starts (or joins) the server of `data`, creating the cluster if the folder is new.
    pub fn start(data: &Path) -> Result<Server, PgError> {
        let bin = find_bin().ok_or(PgError::NoBinaries)?;
        let as_postgres = is_root();
        let dir_err = |source| PgError::DataDir {
            path: data.to_owned(),
            source,
        };
        std::fs::create_dir_all(data).map_err(dir_err)?;
        let data = data.canonicalize().map_err(dir_err)?;
        let mut server = Server {
            bin,
            data,
            port: 0,
            as_postgres,
            owned: false,
        };
        if as_postgres {
            // The postgres user must reach the folder: open each parent for traversal.
            let mut p = server.data.parent();
            while let Some(dir) = p {
                if dir == Path::new("/") {
                    break;
                }
                let _ = Command::new("chmod").arg("o+x").arg(dir).output();
                p = dir.parent();
            }
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&server.data))?;
        }
        if !server.data.join("PG_VERSION").exists() {
            tracing::info!(data = %server.data.display(), "creating a PostgreSQL cluster (first run)");
            let d = server.data_str();
            server.pg(&[
                "initdb",
                "-D",
                &d,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])?;
        }
        if let Some(port) = server.running_port() {
            tracing::info!(port, data = %server.data.display(), "using the PostgreSQL server already running on this folder");
            server.port = port;
            return Ok(server);
        }
        server.port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(PgError::Port)?;
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200",
            server.port,
            server.data_str()
        );
        let log = server.data.join("server.log").display().to_string();
        let d = server.data_str();
        server.pg(&[
            "pg_ctl", "-D", &d, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
        ])?;
        server.owned = true;
        tracing::info!(port = server.port, data = %server.data.display(), "started a private PostgreSQL server");
        Ok(server)
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Creates database `db` if it does not exist.
    pub fn ensure_database(&self, db: &str) -> Result<(), PgError> {
        let exists = self.psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"))?;
        if exists.trim() != "1" {
            self.psql(&format!("CREATE DATABASE \"{db}\""))?;
        }
        Ok(())
    }

    /// Restarts the server (fast shutdown: sessions are cut, as in a failover).
    pub fn restart(&self) -> Result<(), PgError> {
        let log = self.data.join("server.log").display().to_string();
        let d = self.data_str();
        self.pg(&[
            "pg_ctl", "-D", &d, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart",
        ])
    }

    /// Stops the server now (if this handle started it).
    pub fn stop(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        let d = self.data_str();
        match self.pg(&["pg_ctl", "-D", &d, "-m", "fast", "-w", "-t", "60", "stop"]) {
            Ok(()) => {
                tracing::info!(data = %self.data.display(), "stopped the private PostgreSQL server")
            }
            Err(e) => tracing::warn!(error = %e, "could not stop the private PostgreSQL server"),
        }
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    /// The port of a server already running on this folder, from `postmaster.pid`.
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(port)
    }

    fn psql(&self, sql: &str) -> Result<String, PgError> {
        let exe = self.bin.join("psql");
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from("psql")
        };
        let port = self.port.to_string();
        let out = Command::new(exe)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atqc",
                sql,
            ])
            .output()
            .map_err(|e| PgError::Command {
                command: format!("psql -c {sql}"),
                output: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PgError::Command {
                command: format!("psql -c {sql}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn pg(&self, args: &[&str]) -> Result<(), PgError> {
        let exe = self.bin.join(args[0]);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(&args[1..]);
        run(&mut cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) -> Result<(), PgError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| PgError::Command {
        command: command.clone(),
        output: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(PgError::Command {
            command,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The server binaries: `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`, or `PATH`.
pub fn find_bin() -> Option<PathBuf> {
    let has_server = |p: &Path| p.join("initdb").exists() && p.join("pg_ctl").exists();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&p) {
            return Some(p);
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    dirs.sort();
    if let Some((_, bin)) = dirs.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(PathBuf::from)
        .find(|p| has_server(p))
}
