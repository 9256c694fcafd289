-- Maintenance leadership as a lease row with an expiry, fenced by a term (River's
-- `internal/leadership` model). It replaces the session advisory lock, which a frozen or
-- partitioned leader kept for as long as its TCP session lived (minutes to hours). A leader renews
-- `expires_at` by the database clock; anyone may take an expired lease, and taking it bumps
-- `term`. Every maintenance statement checks (and share-locks) the row for its own term, so a
-- leader that wakes up after losing the lease changes nothing.
CREATE TABLE IF NOT EXISTS tierflow_leadership (
    name        text PRIMARY KEY,
    leader_id   text NOT NULL,
    term        bigint NOT NULL,
    elected_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- What each worker incarnation holds, written with every heartbeat (database clock), so the
-- rescuer can free a `Running` row of a live worker that no longer runs it: after a PostgreSQL
-- crash or failover loses a job's asynchronously committed completion but keeps its claim, or
-- after a completion the worker could not record. `holding_at` is when the list was written.
ALTER TABLE apalis.workers ADD COLUMN IF NOT EXISTS holding text[];
ALTER TABLE apalis.workers ADD COLUMN IF NOT EXISTS holding_at timestamptz;
