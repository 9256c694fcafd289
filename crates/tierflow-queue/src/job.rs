//! The [`Job`] trait: a payload type and the policy of its kind.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::QueueError;

/// A job kind: a serde payload plus the constants the queue needs.
///
/// `KIND` is stored in every row (`apalis.jobs.job_type`) and is therefore permanent: renaming
/// it orphans queued jobs. It is snake_case and unique across tierflow.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The permanent name of the kind, also its queue name.
    const KIND: &'static str;
    /// Attempts before the job is dead.
    const MAX_ATTEMPTS: i32 = 10;
    /// Longest one attempt may run; past it the attempt fails (and, if its worker is gone, the
    /// rescuer reclaims it).
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    /// Claim jobs of this kind with a synchronous commit ([`crate::lease::ClaimCommit::Durable`]).
    /// Set it for a kind that tells the outside world about a change committed before the job
    /// (a webhook): the claim then waits until that change is flushed — and, with synchronous
    /// replication, on a replica — so a crash or failover cannot take back a change someone
    /// outside has already heard of. It costs one WAL flush per claimed batch.
    const DURABLE_CLAIM: bool = false;
    /// Most jobs of this kind one worker process runs at once, below the fleet's concurrency:
    /// for a kind whose jobs come one after another (a chain of batches), where more slots would
    /// only hold connections.
    const MAX_CONCURRENCY: usize = usize::MAX;
    /// Most claimed jobs of this (transactional) kind one transaction runs together: one
    /// statement fences them all, their handlers run in turn, and one commit records them all — a
    /// job's effect and its completion still commit together. A claim that takes several due jobs splits them into
    /// such batches; one job due alone runs alone, so batching adds no latency. If a handler in
    /// a batch fails, the batch is rolled back and each of its jobs runs alone (see
    /// [`crate::executor`]). For a kind whose jobs are short and touch one tenant's rows each:
    /// a batch holds its first job's row locks until its last job is done. Standalone kinds
    /// ignore it (the completer batches their completions).
    const BATCH: usize = 1;

    /// Delay before attempt `failed_attempts + 1`, after `failed_attempts` failures.
    fn backoff(failed_attempts: i32) -> std::time::Duration {
        crate::retry::exponential_backoff(failed_attempts)
    }
}

/// The key of one job within its kind: for cancelling, rescheduling and dedup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub kind: &'static str,
    pub key: String,
}

/// A job ready to be written.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub payload: Vec<u8>,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
    pub priority: i32,
    /// Unique within the kind; a second job with the same key is skipped.
    pub key: Option<String>,
}

impl NewJob {
    /// Encodes `job` to run at `run_at`.
    pub fn new<J: Job>(job: &J, run_at: DateTime<Utc>) -> Result<Self, QueueError> {
        let payload = serde_json::to_vec(job).map_err(|source| QueueError::Encode {
            kind: J::KIND,
            source,
        })?;
        Ok(Self {
            kind: J::KIND,
            payload,
            run_at,
            max_attempts: J::MAX_ATTEMPTS,
            priority: 0,
            key: None,
        })
    }

    /// Sets the job's key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}
