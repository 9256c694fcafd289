//! A PostgreSQL server of a test's own, for tests that stop or restart the server: `initdb` into a
//! temporary folder, its own port, started and stopped with `pg_ctl`. The shared server is never
//! touched. As root (CI), the server runs as the `postgres` system user, which PostgreSQL
//! requires.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A private server; stopped and deleted on drop.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Initializes and starts a server on a free port, with trust auth for local connections.
    pub fn start() -> PrivatePostgres {
        let bin = find_bin()
            .expect("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql");
        let as_postgres = is_root();
        let data =
            std::env::temp_dir().join(format!("tierflow-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).expect("create data dir");
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&data));
        }
        let port = free_port();
        let pg = PrivatePostgres {
            bin,
            data,
            port,
            as_postgres,
        };
        pg.pg(&[
            "initdb",
            "-D",
            &pg.data_str(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 200\n",
            pg.data_str()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .expect("write postgresql.conf");
        pg.ctl(&["start", "-w", "-t", "30"]);
        pg
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Restarts the server (fast shutdown: sessions are cut, as in a failover).
    pub fn restart(&self) {
        self.ctl(&["restart", "-m", "fast", "-w", "-t", "30"]);
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn ctl(&self, args: &[&str]) {
        let log = self.data.join("server.log").display().to_string();
        let data = self.data_str();
        let mut full = vec!["pg_ctl", "-D", &data, "-l", &log];
        full.extend_from_slice(args);
        self.pg(&full);
    }

    fn pg(&self, args: &[&str]) {
        let exe = self.bin.join(args[0]);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(&args[1..]);
        run(&mut cmd);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let log = self.data.join("server.log").display().to_string();
        let exe = self.bin.join("pg_ctl");
        let d = self.data_str();
        let args = [
            "-D",
            d.as_str(),
            "-l",
            log.as_str(),
            "stop",
            "-m",
            "immediate",
        ];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The server binaries: `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin() -> Option<PathBuf> {
    let has_initdb = |p: &Path| p.join("initdb").exists() && p.join("pg_ctl").exists();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&p) {
            return Some(p);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| has_initdb(p))
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}
