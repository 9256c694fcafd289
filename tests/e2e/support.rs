//! Running the built `tierflow` binary: one-shot commands and long-running worker processes.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

/// Runs `tierflow args…` with `DATABASE_URL=url` and returns its output.
pub fn tierflow(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .output()
        .expect("start the tierflow binary")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `tierflow worker` process with fast test settings; killed (SIGKILL) on drop.
pub struct WorkerProc {
    child: Child,
}

impl WorkerProc {
    /// Starts a worker whose host name is `host` (a restart may reuse it, as a pod does).
    pub fn start(url: &str, host: &str) -> WorkerProc {
        Self::start_with(url, host, &[])
    }

    /// Starts a worker with extra environment (applied last).
    pub fn start_with(url: &str, host: &str, env: &[(&str, &str)]) -> WorkerProc {
        let log = std::env::var("TIERFLOW_TEST_LOG").is_ok();
        Self::spawn(
            url,
            host,
            env,
            if log { Stdio::inherit() } else { Stdio::null() },
        )
    }

    /// Starts a worker whose log (stderr) goes to the file `log`, for a test that reads it.
    pub fn start_logged(
        url: &str,
        host: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> WorkerProc {
        let file = std::fs::File::create(log).expect("create the worker's log file");
        Self::spawn(url, host, env, Stdio::from(file))
    }

    fn spawn(url: &str, host: &str, env: &[(&str, &str)], stderr: Stdio) -> WorkerProc {
        let child = Command::new(env!("CARGO_BIN_EXE_tierflow"))
            .arg("worker")
            .env("DATABASE_URL", url)
            .env("HOSTNAME", host)
            .env("TIERFLOW_METRICS_LISTEN", "127.0.0.1:0")
            .env("TIERFLOW_CONCURRENCY", "4")
            .env("TIERFLOW_POLL_INTERVAL_MS", "500")
            .env("TIERFLOW_HEARTBEAT_INTERVAL_MS", "200")
            .env("TIERFLOW_RESCUE_AFTER_SECS", "1")
            .env("TIERFLOW_DRAIN_TIMEOUT_SECS", "5")
            .env("TIERFLOW_DB_CONNECT_TIMEOUT", "2")
            .env("RUST_LOG", "tierflow=info,tierflow_queue=info,warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tierflow worker");
        WorkerProc { child }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        self.signal("TERM");
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Sends `signal` (a `kill` name: STOP, CONT, TERM…) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub use tierflow_testdb::wait_until;
