-- Every job wrote two entries into tierflow_jobs_depth_idx (status, job_type, run_at): one when
-- it was enqueued (Pending) and one when it was claimed (Running; the claim's update cannot be
-- HOT, status being indexed). Each range of it duplicates another partial index:
-- - Pending/Failed: tierflow_jobs_claimable_idx (job_type, run_at), the producers' own index;
-- - Running: tierflow_jobs_running_idx (lock_by, lock_at), the rescuer's;
-- - Dead: tierflow_jobs_dead_idx (job_type, done_at).
-- With the status in the claimable index and the kind in the running index (as INCLUDE columns,
-- which only widen the entries those indexes already get), the depth query and the console's
-- default job list read the three of them, still never a finished row
-- (crates/tierflow-queue/src/depth.rs, inspect.rs), and each job writes two index entries fewer.
-- Measured in docs/performance.md ("Standalone slots, and fewer index entries per job").
--
-- The key index: apalis's idx_jobs_idempotency_key (job_type, idempotency_key) holds an entry for
-- every job, keyless ones too (a NULL key never conflicts, but a btree stores it), and gets a new
-- one at each of the job's three writes. Only keyed jobs need it. tierflow_jobs_key_idx is that
-- index, and enqueue's ON CONFLICT now names its predicate, which either index satisfies. The old
-- one stays for now: the previous release's enqueue (ON CONFLICT without the predicate) can only
-- use it, and it runs beside this schema during a rolling upgrade and after a rollback
-- (docs/operations.md, "Upgrade order"). The release after this one drops it (docs/operations.md,
-- "Schema changes held back").
--
-- The new indexes are built first and the old ones dropped last, so the statement that takes the
-- table's exclusive lock (DROP INDEX) comes at the end, just before commit. Building them takes a
-- SHARE lock (enqueues and claims wait, reads do not): 0.8 s for a million rows, a third of them
-- keyed, on the 2-core development machine.
CREATE INDEX tierflow_jobs_claimable_v2_idx ON apalis.jobs (job_type, run_at) INCLUDE (status)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX tierflow_jobs_running_v2_idx ON apalis.jobs (lock_by, lock_at) INCLUDE (job_type)
    WHERE status = 'Running';
CREATE UNIQUE INDEX tierflow_jobs_key_idx ON apalis.jobs (job_type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX apalis.tierflow_jobs_depth_idx;
DROP INDEX apalis.tierflow_jobs_claimable_idx;
DROP INDEX apalis.tierflow_jobs_running_idx;
ALTER INDEX apalis.tierflow_jobs_claimable_v2_idx RENAME TO tierflow_jobs_claimable_idx;
ALTER INDEX apalis.tierflow_jobs_running_v2_idx RENAME TO tierflow_jobs_running_idx;
