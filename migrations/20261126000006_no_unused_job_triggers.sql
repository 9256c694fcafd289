-- Two more pieces of apalis-postgres's schema that tierflow never uses and pays for on hot paths:
--
-- - The `notify_workers` trigger runs a PL/pgSQL function and a pg_notify on the
--   'apalis::job::insert' channel for every job inserted due now — three per downgrade request,
--   5,000 per bulk batch — for listeners tierflow does not have: its producers listen on
--   'tierflow_jobs' (migration 0004), one notification per kind per transaction.
-- - The `fk_worker_lock_by` foreign key runs a referential check (an SPI query that takes a KEY
--   SHARE lock on the worker's row) for every claimed job: concurrent claims by one worker then
--   share that row lock through a MultiXact. tierflow does not need it: the rescuer treats a
--   `lock_by` with no live worker row as a dead worker (LEFT JOIN, `w.id IS NULL`), and the
--   cleaner deletes a worker row only when no job names it.
DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
ALTER TABLE apalis.jobs DROP CONSTRAINT IF EXISTS fk_worker_lock_by;
