-- apalis's `idx_apalis_jobs_lock_by` indexes `lock_by` on every row, though tierflow sets it only
-- while a job is `Running` (every transition out of `Running` clears it). Each insert, claim and
-- completion wrote an entry into it; tierflow's one reader (the cleaner's "does this worker still
-- hold a job" check) now filters on `status = 'Running'` and uses the partial
-- `tierflow_jobs_running_idx` (lock_by, lock_at) instead.
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
