//! A PostgreSQL server of a test's own, for tests that stop, restart, crash, freeze or fail over
//! the server: a fresh temporary folder, its own port; stopped and deleted on drop. The shared
//! server is never touched.
//!
//! The faults: [`PrivatePostgres::stop_immediate`] (a crash) and
//! [`PrivatePostgres::start_again`]; [`PrivatePostgres::freeze`] / [`PrivatePostgres::thaw`]
//! (SIGSTOP / SIGCONT: a server that holds its connections open and answers nothing, as a
//! hung host does); and a streaming-replication pair, [`PrivatePostgres::start_primary`] and
//! [`PrivatePostgres::start_standby`], for failover with [`PrivatePostgres::promote`].
//!
//! The server methods block (they run `pg_ctl`, for up to a minute): from an async test, call
//! them where nothing else of the test must run meanwhile, or use a multi-thread runtime.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tierflow_pg::Server;

/// A private server in a temporary folder.
pub struct PrivatePostgres {
    server: Option<Server>,
    dir: PathBuf,
    /// Set by [`PrivatePostgres::freeze`]: drop must thaw before it can stop the server.
    frozen: AtomicBool,
}

impl PrivatePostgres {
    /// Initializes and starts a server; panics with the reason if it cannot.
    pub fn start() -> PrivatePostgres {
        Self::start_with(&[])
    }

    /// Initializes and starts a server that standbys can stream from
    /// ([`tierflow_pg::REPLICATION_CONF`]).
    pub fn start_primary() -> PrivatePostgres {
        Self::start_with(tierflow_pg::REPLICATION_CONF)
    }

    /// Initializes and starts a server with extra settings (`name`, `value`).
    pub fn start_with(conf: &[(&str, &str)]) -> PrivatePostgres {
        let dir = new_dir();
        let server =
            Server::start_with(&dir, conf).unwrap_or_else(|e| panic!("private PostgreSQL: {e}"));
        PrivatePostgres {
            server: Some(server),
            dir,
            frozen: AtomicBool::new(false),
        }
    }

    /// A hot standby of `primary` (a base backup of it, streaming its WAL), running on its own
    /// port and accepting read-only connections when this returns.
    pub fn start_standby(primary: &PrivatePostgres) -> PrivatePostgres {
        let dir = new_dir();
        let server = Server::start_standby(primary.server(), &dir)
            .unwrap_or_else(|e| panic!("standby of private PostgreSQL: {e}"));
        PrivatePostgres {
            server: Some(server),
            dir,
            frozen: AtomicBool::new(false),
        }
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        self.server().url(db)
    }

    /// The server's port on 127.0.0.1 (kept across [`PrivatePostgres::start_again`]).
    pub fn port(&self) -> u16 {
        self.server().port()
    }

    /// The postmaster's process id, while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.server().postmaster_pid()
    }

    /// Restarts the server (fast shutdown: sessions are cut, as in a failover); a frozen one is
    /// thawed first.
    pub fn restart(&self) {
        self.thaw();
        self.server()
            .restart()
            .unwrap_or_else(|e| panic!("restart: {e}"));
    }

    /// Crashes the server (`pg_ctl -m immediate stop`): every session is cut at once, no
    /// shutdown checkpoint, crash recovery on the next start. A frozen server is thawed first (a
    /// stopped process cannot take the stop signal), so it may answer for a moment before it
    /// dies.
    pub fn stop_immediate(&self) {
        self.thaw();
        self.server()
            .stop_immediate()
            .unwrap_or_else(|e| panic!("immediate stop: {e}"));
    }

    /// Shuts the server down cleanly (`pg_ctl -m fast stop`); a frozen one is thawed first.
    pub fn stop_fast(&self) {
        self.thaw();
        self.server()
            .stop_fast()
            .unwrap_or_else(|e| panic!("fast stop: {e}"));
    }

    /// Starts the server again after [`PrivatePostgres::stop_immediate`], on the same port;
    /// returns when it accepts connections (crash recovery done).
    pub fn start_again(&self) {
        self.server()
            .start_again()
            .unwrap_or_else(|e| panic!("start again: {e}"));
    }

    /// Promotes this standby to a primary; returns when it accepts writes.
    pub fn promote(&self) {
        self.server()
            .promote()
            .unwrap_or_else(|e| panic!("promote: {e}"));
    }

    /// Freezes the server: SIGSTOP to the postmaster, then to every process it started
    /// (backends, WAL writer, checkpointer…), so it accepts TCP connections (the kernel does)
    /// but answers nothing — neither running sessions nor new ones. Returns once every one of
    /// them is stopped. Undo with [`PrivatePostgres::thaw`]; drop thaws too.
    pub fn freeze(&self) {
        let pid = self
            .postmaster_pid()
            .unwrap_or_else(|| panic!("freeze: the server is not running"));
        self.frozen.store(true, Ordering::SeqCst);
        // The postmaster first, and wait until it is stopped: from then on it forks no new
        // process, so the children listed next are all there are.
        signal("STOP", &[pid]);
        wait_stopped(pid);
        let children = children_of(pid);
        signal("STOP", &children);
        for child in children {
            wait_stopped(child);
        }
    }

    /// Resumes a server [`PrivatePostgres::freeze`] stopped (SIGCONT to the postmaster and its
    /// children). Nothing happens if it is not frozen.
    pub fn thaw(&self) {
        if !self.frozen.swap(false, Ordering::SeqCst) {
            return;
        }
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let mut pids = children_of(pid);
        pids.push(pid);
        signal("CONT", &pids);
    }

    /// Waits until this standby has replayed everything `primary` had written when the call
    /// began (`pg_current_wal_lsn()` there, `pg_last_wal_replay_lsn()` here); panics after 30
    /// seconds.
    pub async fn wait_for_replay(&self, primary: &PrivatePostgres) {
        let mut conn = PgConnection::connect(&primary.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("wait_for_replay: connect to the primary: {e}"));
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("wait_for_replay: the primary's LSN: {e}"));
        conn.close().await.ok();
        let conn = PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("wait_for_replay: connect to the standby: {e}"));
        // Behind a lock: each poll borrows the one connection.
        let conn = tokio::sync::Mutex::new(conn);
        let what = format!("the standby to replay the primary's WAL up to {target}");
        crate::wait_until(Duration::from_secs(30), &what, || async {
            // NULL (so `None`) when this server is not a standby: then it never catches up.
            let caught_up: Option<bool> =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&target)
                    .fetch_one(&mut *conn.lock().await)
                    .await
                    .unwrap_or_else(|e| panic!("wait_for_replay: the standby's LSN: {e}"));
            caught_up.filter(|c| *c).map(|_| ())
        })
        .await;
        conn.into_inner().close().await.ok();
    }

    fn server(&self) -> &Server {
        self.server
            .as_ref()
            .unwrap_or_else(|| unreachable!("present until drop"))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // A stopped postmaster cannot take pg_ctl's stop signal.
        self.thaw();
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh folder name under the temporary folder.
fn new_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tierflow-pg-{}", uuid::Uuid::new_v4().simple()))
}

/// Sends SIGSTOP or SIGCONT (`sig` without the SIG) to `pids`, with kill(1): this crate has no
/// libc binding.
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .output()
        .unwrap_or_else(|e| panic!("kill -{sig}: {e}"));
    // A child that exited meanwhile makes kill fail for that pid only; the others got it.
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.contains("No such process") {
            panic!("kill -{sig} {pids:?}: {stderr}");
        }
    }
}

/// A process's state letter and parent, from `/proc/<pid>/stat` (`pid (comm) S ppid …`; comm
/// may hold spaces and parentheses, so the fields are read after the last `)`).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every process whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let entries =
        std::fs::read_dir("/proc").unwrap_or_else(|e| panic!("list processes in /proc: {e}"));
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Waits until `pid` is stopped (or gone: a child may exit as it is signalled); SIGSTOP takes
/// effect asynchronously.
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stat(pid) {
            None | Some(('T' | 't' | 'Z' | 'X', _)) => return,
            Some((state, _)) if Instant::now() > deadline => {
                panic!("freeze: process {pid} still in state {state} after SIGSTOP")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
