//! tierflow's job queue: every queue semantic tierflow relies on, in one place.
//!
//! Jobs live in apalis-postgres's `apalis.jobs` table, created by apalis-postgres's own
//! migrations ([`schema::apalis_migrator`]); `job_type` holds the job kind's permanent,
//! explicit name (never a Rust type path). This crate writes that table itself rather than
//! through `apalis_postgres::queries::push_tasks`, for two measured reasons: `push_tasks`
//! truncates `run_at` to whole seconds (a job due at a grace end could start up to a second
//! early), and a duplicate idempotency key fails its whole batch. Here `run_at` keeps
//! microseconds and a duplicate key is skipped (`ON CONFLICT DO NOTHING`).
//!
//! What must not happen here: domain rules. This crate knows kinds, payload bytes, due times and
//! keys, not tenants or tiers.
//!
//! # Layout
//! - [`job`] — the [`Job`] trait a payload implements (kind name, attempts) and [`NewJob`].
//! - [`enqueue`] — [`enqueue()`] and [`cancel_by_keys`], both on the caller's connection, so
//!   they join the caller's transaction; and [`insert_jobs!`] + [`JobRows`], [`cancel_jobs!`] +
//!   [`CancelKeys`], for a caller that writes or cancels jobs inside a statement of its own.
//! - [`state`] — the job states stored in `apalis.jobs.status`.
//! - [`fleet`] — a worker process's runtime: per kind a [`producer`] (claims due jobs, woken by
//!   the [`notifier`], with a polling floor) feeding an apalis worker whose [`executor`] runs the
//!   handler and records the outcome through [`lease`] (fenced) — a standalone kind's success
//!   through the batching [`completer`]; plus the [`heartbeat`] and the
//!   [`maintenance`] services (elector lease, rescuer, cleaner, sampler), each on its own schedule.
//! - [`retry`] — exponential backoff with jitter.
//! - [`metrics`], [`depth`] — metric names and recording; queue depth sampled once per fleet.
//! - [`admin`] — what operators do: stats, list, dead jobs, re-drive, cancel.
//! - [`inspect`] — what the operator console reads: depth, last hour's throughput and latency, a
//!   job in full, the fleet.
//! - [`schema`] — the apalis migrations.
//! - [`error`] — [`QueueError`].

pub mod admin;
pub mod completer;
pub mod depth;
pub mod enqueue;
pub mod error;
pub mod executor;
pub mod fleet;
pub mod heartbeat;
pub mod inspect;
pub mod job;
pub mod lease;
pub mod maintenance;
pub mod metrics;
pub mod notifier;
pub mod producer;
pub mod retry;
pub mod schema;
pub mod state;

pub use enqueue::{
    CancelKeys, CancelledJob, EnqueuedJob, JobRows, cancel_by_keys, count_cancelled, enqueue,
};
pub use error::QueueError;
pub use executor::{BatchFuture, CONTENDED_RETRY, HandlerFuture, JobError, JobTx, Outcome};
pub use fleet::{Fleet, FleetConfig};
pub use job::{Job, JobKey, NewJob};
pub use state::JobState;
