-- audit_events_subject_idx (subject_type, subject_id) took an entry for every audit row — every
-- request, every transition job, every override — yet one query reads it: the console's job page,
-- which lists the operator actions on one job (subject_type 'job'; crates/tierflow-store/src/
-- console.rs, job_audit). Partial on that type, it keeps serving that page and every other audit
-- row writes one index entry fewer (a real transition job: ~90 B of WAL less, of ~2.5 kB).
-- Tenants' trails read audit_events_tenant_id_idx, tier edits audit_events_catalog_idx.
--
-- The build reads the table once under a write lock (seconds per ten million rows on the
-- development machine) and writes only the job rows, which are few. The previous release's console
-- query binds the type as a parameter: with a custom plan (its first five runs per connection)
-- it uses this index, with a generic one it scans — slower, never wrong, until it is replaced.
CREATE INDEX audit_events_job_subject_idx ON audit_events (subject_id, id) WHERE subject_type = 'job';
DROP INDEX audit_events_subject_idx;
