-- apalis's unique index on (job_type, idempotency_key) holds every job's row, keyed or not, and
-- every job writes three entries into it (insert, claim, completion: none of them is a HOT
-- update). Migration 0018 added tierflow_jobs_key_idx, the same uniqueness for keyed jobs only,
-- and enqueue's `ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL`
-- infers it. The release before 0018 named no predicate and could use only this index, so its
-- removal waited one release (docs/operations.md, "Schema changes held back"); 0018 and 0019 have
-- shipped since. Real transition jobs save two B-tree entries each in their claim and completion,
-- a keyless job three (docs/performance.md, "Real jobs: the rest of the WAL").
DROP INDEX IF EXISTS apalis.idx_jobs_idempotency_key;
