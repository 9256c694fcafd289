-- Every job row is updated twice (claimed, then finished) and neither update can be HOT (status is
-- indexed), so each one writes an entry into every index of apalis.jobs. Three of apalis-postgres's
-- indexes earn nothing for tierflow and cost it on every update:
-- - `unique_job_id` duplicates the primary key `jobs_pkey` (both unique btrees on `id`);
-- - `lidx` duplicates `idx_apalis_jobs_lock_by` (both btrees on `lock_by`; apalis's own
--   "streamline indices" migration added the second without dropping the first);
-- - `idx_apalis_jobs_fetch_partial` serves apalis's own fetch query, which tierflow does not use:
--   its producers claim through `tierflow_jobs_claimable_idx`.
-- apalis's later migrations create and drop indexes with IF [NOT] EXISTS, so they still apply.
DROP INDEX IF EXISTS apalis.unique_job_id;
DROP INDEX IF EXISTS apalis.lidx;
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_fetch_partial;
