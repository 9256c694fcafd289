-- Every job wrote two entries into tierflow_jobs_depth_idx (status, job_type, run_at): one when
-- it was enqueued (Pending) and one when it was claimed (Running; the claim's update cannot be
-- HOT, status being indexed). Each range of it duplicates another partial index:
-- - Pending/Failed: tierflow_jobs_claimable_idx (job_type, run_at), the producers' own index;
-- - Running: tierflow_jobs_running_idx (lock_by, lock_at), the rescuer's;
-- - Dead: tierflow_jobs_dead_idx (job_type, done_at).
-- With the status in the claimable index and the kind in the running index (as INCLUDE columns,
-- which only widen the entries those indexes already get), the depth query reads the three of
-- them, still index-only and still never a finished row (crates/tierflow-queue/src/depth.rs),
-- and each job writes two index entries fewer. Measured in docs/performance.md ("Fewer index
-- entries per job").
CREATE INDEX tierflow_jobs_claimable_v2_idx ON apalis.jobs (job_type, run_at) INCLUDE (status)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX tierflow_jobs_running_v2_idx ON apalis.jobs (lock_by, lock_at) INCLUDE (job_type)
    WHERE status = 'Running';
DROP INDEX apalis.tierflow_jobs_depth_idx;
DROP INDEX apalis.tierflow_jobs_claimable_idx;
DROP INDEX apalis.tierflow_jobs_running_idx;
ALTER INDEX apalis.tierflow_jobs_claimable_v2_idx RENAME TO tierflow_jobs_claimable_idx;
ALTER INDEX apalis.tierflow_jobs_running_v2_idx RENAME TO tierflow_jobs_running_idx;

-- apalis's idx_jobs_idempotency_key (job_type, idempotency_key) held an entry for every job,
-- keyless ones too (a NULL key never conflicts, but a btree stores it), and got a new one at
-- each of the job's three writes. Only keyed jobs need it: enqueue's ON CONFLICT names the
-- predicate (crates/tierflow-queue/src/enqueue.rs), and a key lookup (`idempotency_key = …`)
-- implies it. Built before the old one is dropped, so enqueues never run without it.
CREATE UNIQUE INDEX tierflow_jobs_key_idx ON apalis.jobs (job_type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX apalis.idx_jobs_idempotency_key;
