//! The queue's metric names, and the recording helpers the runtime calls.
//!
//! Names follow Prometheus conventions: `tierflow_` prefix, `_total` counters, `_seconds`
//! durations, labels bounded to job kinds, outcomes and states (never tenant ids).

/// Jobs written to the queue, by kind.
pub const JOBS_ENQUEUED: &str = "tierflow_jobs_enqueued_total";
/// Job runs finished, by kind and outcome (success, noop, rescheduled, retry, dead, cancelled).
pub const JOBS_FINISHED: &str = "tierflow_jobs_total";
/// Handler run time, by kind.
pub const JOB_DURATION: &str = "tierflow_job_duration_seconds";
/// Claim time minus due time, by kind.
pub const PICKUP_DELAY: &str = "tierflow_job_pickup_delay_seconds";
/// Standalone jobs recorded done by one completer statement.
pub const COMPLETER_BATCH: &str = "tierflow_completer_batch_jobs";
/// Jobs reclaimed from workers that stopped, by kind.
pub const JOBS_RESCUED: &str = "tierflow_jobs_rescued_total";
/// Job slots of this process, by kind.
pub const WORKER_SLOTS: &str = "tierflow_worker_slots";
/// Busy job slots of this process, by kind.
pub const WORKER_BUSY: &str = "tierflow_worker_busy_slots";
/// Jobs by kind and state (due, scheduled, running, retrying, dead), sampled from the database.
pub const QUEUE_JOBS: &str = "tierflow_queue_jobs";
/// Age of the oldest due job, by kind, sampled from the database.
pub const OLDEST_DUE_AGE: &str = "tierflow_queue_oldest_due_age_seconds";
/// 1 while this process holds the maintenance lease, else 0.
pub const LEADER: &str = "tierflow_maintenance_leader";
/// When the database sample was taken (unix seconds): alert when it goes stale.
pub const SAMPLED_AT: &str = "tierflow_queue_sampled_timestamp_seconds";

/// Registers descriptions so `/metrics` explains itself.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(JOBS_ENQUEUED, "Jobs written to the queue.");
    describe_counter!(JOBS_FINISHED, "Job runs finished, by outcome.");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Handler run time.");
    describe_histogram!(PICKUP_DELAY, Unit::Seconds, "Claim time minus due time.");
    describe_histogram!(
        COMPLETER_BATCH,
        "Standalone jobs recorded done by one completer statement."
    );
    describe_counter!(
        JOBS_RESCUED,
        "Jobs reclaimed from workers that stopped mid-run."
    );
    describe_gauge!(WORKER_SLOTS, "Job slots of this process.");
    describe_gauge!(WORKER_BUSY, "Busy job slots of this process.");
    describe_gauge!(
        QUEUE_JOBS,
        "Jobs by kind and state, sampled from the database."
    );
    describe_gauge!(
        LEADER,
        "1 while this process leads queue maintenance (holds the lease)."
    );
    describe_gauge!(OLDEST_DUE_AGE, Unit::Seconds, "Age of the oldest due job.");
    describe_gauge!(
        SAMPLED_AT,
        Unit::Seconds,
        "Unix time of the last database sample."
    );
}

pub(crate) fn finished(kind: &'static str, outcome: &'static str) {
    metrics::counter!(JOBS_FINISHED, "kind" => kind, "outcome" => outcome).increment(1);
}
