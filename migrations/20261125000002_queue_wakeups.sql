-- tierflow's additions to the apalis queue table (apalis.jobs, created by apalis-postgres).
--
-- 1. Wake-ups for every job that becomes claimable, including jobs scheduled for later and jobs
--    rescheduled by a retry. apalis-postgres's own per-row trigger notifies only rows due at
--    insert time, once per row; these statement-level triggers send one NOTIFY per job kind per
--    statement on channel `tierflow_jobs`, with the kind as payload. Producers re-read their next
--    due time on each, so a job due in 2 s starts at its due time, not at the next poll.
-- 2. Indexes for the producer's next-due lookup and for listing dead jobs.

CREATE FUNCTION apalis.tierflow_notify_claimable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    FOR kind IN SELECT DISTINCT job_type FROM new_rows WHERE status IN ('Pending', 'Failed') LOOP
        PERFORM pg_notify('tierflow_jobs', kind);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tierflow_notify_insert AFTER INSERT ON apalis.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apalis.tierflow_notify_claimable();

CREATE TRIGGER tierflow_notify_update AFTER UPDATE ON apalis.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION apalis.tierflow_notify_claimable();

-- The producer's "when is my next job due?" and the claim's due scan.
CREATE INDEX tierflow_jobs_claimable_idx ON apalis.jobs (job_type, run_at) WHERE status IN ('Pending', 'Failed');
-- `tierflow jobs dead`.
CREATE INDEX tierflow_jobs_dead_idx ON apalis.jobs (job_type, done_at) WHERE status = 'Dead';
-- The rescuer's scan of running jobs.
CREATE INDEX tierflow_jobs_running_idx ON apalis.jobs (lock_by, lock_at) WHERE status = 'Running';
-- The cleaner's scan of finished jobs past their retention.
CREATE INDEX tierflow_jobs_finished_idx ON apalis.jobs (done_at) WHERE status IN ('Done', 'Cancelled');
