//! The benchmark's own job kinds, run by `tierflow bench-worker` processes beside the real ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tierflow_queue::{HandlerFuture, Job, JobTx, Outcome};
use tierflow_worker::WorkerState;

/// Does nothing: measures the queue itself (standalone, like a webhook delivery: no transaction,
/// success recorded by the batching completer).
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchNoop {}

impl Job for BenchNoop {
    const KIND: &'static str = "bench_noop";
}

pub fn noop(_: BenchNoop, _: &WorkerState) -> HandlerFuture<'_> {
    Box::pin(async { Ok(Outcome::Done("noop".into())) })
}

/// Sleeps: holds a job while a worker is killed, to measure rescue.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchSleep {
    pub ms: u64,
}

impl Job for BenchSleep {
    const KIND: &'static str = "bench_sleep";
}

pub fn sleep<'a>(job: BenchSleep, _: JobTx<'a>, _: &'a WorkerState) -> HandlerFuture<'a> {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
        Ok(Outcome::Done("slept".into()))
    })
}
