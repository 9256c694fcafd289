//! The `bench-worker` processes a section starts. Each one's stderr is kept (its last lines), so a
//! section whose workers died — say, refused by a database out of connection slots — fails at
//! once and says why, instead of waiting out its timeout for jobs nobody will run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};

/// How many of a worker's last stderr lines are kept for the error.
const TAIL: usize = 20;

/// Running `bench-worker` processes; stopped (SIGTERM, then waited for) when dropped.
pub struct Workers {
    procs: Vec<Proc>,
}

struct Proc {
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Set once the process is known to have exited.
    exited: Option<ExitStatus>,
}

impl Workers {
    /// Starts `n` processes with concurrency `c` against `url`.
    pub fn start(url: &str, n: usize, c: usize) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            let mut child = Command::new(&exe)
                .arg("bench-worker")
                .env("DATABASE_URL", url)
                .env("HOSTNAME", format!("bench-{i}"))
                .env("TIERFLOW_CONCURRENCY", c.to_string())
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("start a bench-worker process")?;
            let stderr = Arc::new(Mutex::new(VecDeque::new()));
            if let Some(pipe) = child.stderr.take() {
                let tail = stderr.clone();
                // Read to the end, or the process would block on a full pipe.
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == TAIL {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                });
            }
            procs.push(Proc {
                child,
                stderr,
                exited: None,
            });
        }
        Ok(Workers { procs })
    }

    /// Fails if a process has exited on its own, with its status and last stderr lines.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            if p.exited.is_some() {
                continue;
            }
            if let Some(status) = p.child.try_wait()? {
                p.exited = Some(status);
                let tail = p
                    .stderr
                    .lock()
                    .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default();
                bail!(
                    "bench-worker {i} exited ({status}) before its jobs were done; its last \
                     output:\n{tail}\n(is the database out of connection slots? see max_connections)"
                );
            }
        }
        Ok(())
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
