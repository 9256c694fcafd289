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
//!
//! Fault tests also use it to crash a server ([`Server::stop_immediate`], then
//! [`Server::start_again`] on the same port), to find the postmaster to freeze
//! ([`Server::postmaster_pid`]), and to run a streaming-replication pair: a primary started with
//! [`REPLICATION_CONF`], a hot standby cloned from it ([`Server::start_standby`]) and promoted in a
//! failover ([`Server::promote`]).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// Settings of a primary that hot standbys stream from. PostgreSQL 15's defaults already match
/// (`wal_level=replica`, ten WAL senders, `hot_standby=on`); they are spelled out so a
/// cluster's own `postgresql.conf` cannot turn replication off. `wal_keep_size` keeps enough WAL
/// for a standby that falls behind without a replication slot. The replication connection itself
/// is allowed by the `host replication all 127.0.0.1/32 trust` line `initdb --auth=trust` writes.
pub const REPLICATION_CONF: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("hot_standby", "on"),
    ("wal_keep_size", "64MB"),
];

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
    /// Settings passed as `-c name=value` on top of the fixed ones (see [`Server::options`]).
    extra_conf: Vec<(String, String)>,
    /// Whether this handle started the running server (and so stops it on drop). Cleared by
    /// [`Server::stop_immediate`] (nothing left to stop), set again by [`Server::start_again`].
    /// Atomic because those take `&self`: a test holds the server shared while it crashes it.
    owned: AtomicBool,
}

impl Server {
    /// Starts (or joins) the server of `data`, creating the cluster if the folder is new.
    pub fn start(data: &Path) -> Result<Server, PgError> {
        Server::start_with(data, &[])
    }

    /// [`Server::start`] with extra settings (`-c name=value`), kept for [`Server::start_again`]
    /// and passed on to standbys; [`REPLICATION_CONF`] makes a primary. A server already running
    /// on the folder is joined as it is, its settings untouched.
    pub fn start_with(data: &Path, extra_conf: &[(&str, &str)]) -> Result<Server, PgError> {
        let server = Server::prepare(data, extra_conf)?;
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
        server.launch()
    }

    /// Clones `primary` into the new folder `data` with `pg_basebackup -R` (which writes the
    /// `primary_conninfo` and `standby.signal` of a streaming standby) and starts the copy as a
    /// hot standby on a port of its own, with the primary's extra settings (so it is a valid
    /// primary once promoted). Returns when the standby accepts read-only connections.
    pub fn start_standby(primary: &Server, data: &Path) -> Result<Server, PgError> {
        let conf: Vec<(&str, &str)> = primary
            .extra_conf
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let server = Server::prepare(data, &conf)?;
        // PostgreSQL refuses a data folder others can read, and pg_basebackup leaves the mode of
        // a folder that already exists (`prepare` created it) as it found it.
        std::fs::set_permissions(&server.data, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| PgError::DataDir {
                path: server.data.clone(),
                source,
            },
        )?;
        let d = server.data_str();
        let port = primary.port.to_string();
        // A fast checkpoint: the default spread one makes the backup wait for minutes.
        // `--no-sync` as initdb's: these are throwaway folders. The folder must be empty (the
        // command says so otherwise).
        server.pg(&[
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            &d,
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        ])?;
        server.launch()
    }

    /// Resolves the folder and lets the server's user use it; no server is started yet.
    fn prepare(data: &Path, extra_conf: &[(&str, &str)]) -> Result<Server, PgError> {
        let bin = find_bin().ok_or(PgError::NoBinaries)?;
        let as_postgres = is_root();
        let dir_err = |source| PgError::DataDir {
            path: data.to_owned(),
            source,
        };
        std::fs::create_dir_all(data).map_err(dir_err)?;
        let data = data.canonicalize().map_err(dir_err)?;
        let server = Server {
            bin,
            data,
            port: 0,
            as_postgres,
            extra_conf: extra_conf
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            owned: AtomicBool::new(false),
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
        Ok(server)
    }

    /// Joins the server already running on the folder, or starts one on a free port.
    fn launch(mut self) -> Result<Server, PgError> {
        if let Some(port) = self.running_port() {
            tracing::info!(port, data = %self.data.display(), "using the PostgreSQL server already running on this folder");
            self.port = port;
            return Ok(self);
        }
        self.port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(PgError::Port)?;
        self.pg_start()?;
        tracing::info!(port = self.port, data = %self.data.display(), "started a private PostgreSQL server");
        Ok(self)
    }

    /// `pg_ctl start` on `self.port`, waiting until connections are accepted (after any crash
    /// recovery; a standby once it is consistent); this handle then owns the server.
    fn pg_start(&self) -> Result<(), PgError> {
        let options = self.options();
        let log = self.data.join("server.log").display().to_string();
        let d = self.data_str();
        self.pg(&[
            "pg_ctl", "-D", &d, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
        ])?;
        self.owned.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The server's command-line options. `pg_ctl` hands them to a shell, so each setting is
    /// single-quoted.
    fn options(&self) -> String {
        let fixed = [
            ("port".to_owned(), self.port.to_string()),
            ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
            ("unix_socket_directories".to_owned(), self.data_str()),
            ("max_connections".to_owned(), "200".to_owned()),
        ];
        fixed
            .iter()
            .chain(&self.extra_conf)
            .map(|(k, v)| format!("-c {}", shell_quote(&format!("{k}={v}"))))
            .collect::<Vec<_>>()
            .join(" ")
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

    /// Restarts the server (fast shutdown: sessions are cut, as in a failover). A server that
    /// was down (after [`Server::stop_immediate`]) is started, and this handle then stops it on
    /// drop, as after [`Server::start_again`].
    pub fn restart(&self) -> Result<(), PgError> {
        let was_running = self.postmaster_pid().is_some();
        let log = self.data.join("server.log").display().to_string();
        let d = self.data_str();
        self.pg(&[
            "pg_ctl", "-D", &d, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart",
        ])?;
        if !was_running {
            self.owned.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Crashes the server: `pg_ctl -m immediate stop` ends every process at once, without a
    /// shutdown checkpoint, so what is not in the WAL on disk is lost (asynchronous commits not
    /// yet written) and the next start runs crash recovery. Sessions are cut. The handle no
    /// longer stops anything on drop until [`Server::start_again`].
    pub fn stop_immediate(&self) -> Result<(), PgError> {
        let d = self.data_str();
        self.pg(&[
            "pg_ctl",
            "-D",
            &d,
            "-m",
            "immediate",
            "-w",
            "-t",
            "60",
            "stop",
        ])?;
        self.owned.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Shuts the server down cleanly (`pg_ctl -m fast stop`: sessions are told the server is
    /// shutting down and cut, a shutdown checkpoint is written), as an operator's restart or a
    /// planned switchover does. The handle no longer stops anything on drop until
    /// [`Server::start_again`].
    pub fn stop_fast(&self) -> Result<(), PgError> {
        let d = self.data_str();
        self.pg(&["pg_ctl", "-D", &d, "-m", "fast", "-w", "-t", "60", "stop"])?;
        self.owned.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Starts the server again, stopped by [`Server::stop_immediate`] (or by anything else), on
    /// the same port and with the same settings; returns once it accepts connections, crash
    /// recovery included. This handle then stops it on drop.
    pub fn start_again(&self) -> Result<(), PgError> {
        self.pg_start()
    }

    /// Promotes a standby to a primary (`pg_ctl promote`), returning once it accepts writes.
    pub fn promote(&self) -> Result<(), PgError> {
        let d = self.data_str();
        self.pg(&["pg_ctl", "-D", &d, "-w", "-t", "60", "promote"])
    }

    /// The postmaster's process id, from `postmaster.pid`, when it is running (for a test to
    /// freeze it with SIGSTOP).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Stops the server now (if this handle started it).
    pub fn stop(&mut self) {
        if !self.owned.swap(false, Ordering::SeqCst) {
            return;
        }
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
        // `pg_basebackup` comes with the client package, which may live elsewhere than the
        // server's binaries: fall back to PATH as `psql` does.
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from(args[0])
        };
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

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
