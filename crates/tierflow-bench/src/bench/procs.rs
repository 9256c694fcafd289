//! The worker processes a section starts (`bench-worker`s, or one `tierflow worker` as deployed). Each one's stderr is kept (its last lines), so a
//! section whose workers died — say, refused by a database out of connection slots — fails at
//! once and says why, instead of waiting out its timeout for jobs nobody will run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use anyhow::{Context as _, bail};

/// How many of a worker's last stderr lines are kept for the error.
const TAIL: usize = 20;

/// Running `bench-worker` processes; stopped (SIGTERM, then waited for) when dropped.
pub struct Workers {
    procs: Vec<Proc>,
}

struct Proc {
    child: Child,
    /// Reads the process's stderr to its end (or the process would block on a full pipe) and
    /// returns the last lines.
    stderr: Option<JoinHandle<VecDeque<String>>>,
    /// Set once the process is known to have exited.
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` logging errors only, its stdout dropped and its stderr kept.
    fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let mut child = cmd
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .map(|pipe| std::thread::spawn(move || last_lines(pipe)));
        Ok(Proc {
            child,
            stderr,
            exited: None,
        })
    }
}

impl Workers {
    /// Starts `n` processes with concurrency `c` against `url`: `c` slots for every kind, the
    /// standalone no-op kind included (the sections compare concurrencies).
    pub fn start(url: &str, n: usize, c: usize) -> anyhow::Result<Workers> {
        Self::start_with(url, n, c, &[])
    }

    /// [`Workers::start`], with more environment variables for each process (which win over
    /// the ones set from `c`).
    pub fn start_with(
        url: &str,
        n: usize,
        c: usize,
        env: &[(&str, String)],
    ) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("find the tierflow executable")?;
        // Built one by one, so that the ones already started are stopped if a later one fails.
        let mut workers = Workers {
            procs: Vec::with_capacity(n),
        };
        for i in 0..n {
            let proc = Proc::spawn(
                Command::new(&exe)
                    .arg("bench-worker")
                    .env("DATABASE_URL", url)
                    .env("HOSTNAME", format!("bench-{i}"))
                    .env("TIERFLOW_CONCURRENCY", c.to_string())
                    .env("TIERFLOW_STANDALONE_CONCURRENCY", c.to_string())
                    .envs(env.iter().map(|(k, v)| (k, v))),
            )
            .with_context(|| format!("start bench-worker {i}"))?;
            workers.procs.push(proc);
        }
        Ok(workers)
    }

    /// One `tierflow worker` process as deployed: every setting at its default except where the
    /// benchmark's own environment sets one (`TIERFLOW_CONCURRENCY`, `TIERFLOW_DB_POOL_SIZE`, …,
    /// to measure another configuration), with the metrics endpoint on a free port.
    pub fn start_production(url: &str) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("find the tierflow executable")?;
        let proc = Proc::spawn(
            Command::new(&exe)
                .arg("worker")
                .env("DATABASE_URL", url)
                .env("HOSTNAME", "bench-production")
                .env("TIERFLOW_METRICS_LISTEN", "127.0.0.1:0"),
        )
        .context("start tierflow worker")?;
        Ok(Workers { procs: vec![proc] })
    }

    /// Fails if a process has exited on its own, with its status and last stderr lines.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if p.exited.is_some() {
                continue;
            }
            let status = p
                .child
                .try_wait()
                .with_context(|| format!("check on bench-worker {i}"))?;
            if let Some(status) = status {
                p.exited = Some(status);
                // The pipe is closed: the reader ends once it has read the last line.
                let tail = p
                    .stderr
                    .take()
                    .and_then(|r| r.join().ok())
                    .map(|t| t.into_iter().collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                bail!(
                    "bench-worker {i} exited ({status}) before its jobs were done; its last \
                     output:\n{tail}"
                );
            }
        }
        Ok(())
    }

    /// Process ids of the processes still running.
    pub fn pids(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.exited.is_none())
            .map(|p| p.child.id())
            .collect()
    }

    /// Kills process `i` with SIGKILL and waits for it (the rescue section's victim).
    pub fn kill9(&mut self, i: usize) {
        if let Some(p) = self.procs.get_mut(i).filter(|p| p.exited.is_none()) {
            let _ = p.child.kill();
            p.exited = p.child.wait().ok();
        }
    }

    /// Kills every process with SIGKILL (no drain: their jobs are not needed any more).
    pub fn kill_all(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }

    /// SIGTERM to every process still running, then waits for each to finish draining.
    pub fn stop(&mut self) {
        for p in self.procs.iter().filter(|p| p.exited.is_none()) {
            sigterm(&p.child);
        }
        for p in self.procs.iter_mut().filter(|p| p.exited.is_none()) {
            p.exited = p.child.wait().ok();
        }
    }
}

/// Asks `child` to shut down gracefully, and waits for it.
pub fn terminate(child: &mut Child) {
    sigterm(child);
    let _ = child.wait();
}

/// A child process (the `tierflow api` a section starts) that is stopped on every way out of the
/// section — its end, an error, or the run abandoned on SIGTERM — not only where the section
/// says so.
pub struct Process(Option<Child>);

impl Process {
    pub fn new(child: Child) -> Process {
        Process(Some(child))
    }

    /// SIGTERM, then waits for the process to finish; nothing if it was stopped already.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            terminate(&mut child);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last [`TAIL`] lines of a process's stderr, read to its end (bytes that are not UTF-8 are
/// replaced, not a reason to stop reading).
fn last_lines(pipe: ChildStderr) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(TAIL);
    for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(&line).into_owned());
    }
    tail
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
