-- Test clocks: a frozen time that tenants attached to it live by. Their reads report it, their
-- changes are stamped with it, and their timed jobs (grace ends, override and entitlement
-- expiries) are parked out of the workers' reach and run, in due order, when the clock is
-- advanced (`POST /v1/test-clocks/{id}/advance`). Real tenants never see a test clock.
CREATE TABLE test_clocks (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    frozen_time  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL
);

ALTER TABLE tenant_entitlements ADD COLUMN test_clock_id uuid REFERENCES test_clocks (id);
CREATE INDEX tenant_entitlements_test_clock_idx ON tenant_entitlements (test_clock_id)
    WHERE test_clock_id IS NOT NULL;

-- The parked jobs of test-clock tenants: the queue row's run_at is far in the future; this is
-- when the job is due in the clock's time.
CREATE TABLE test_clock_jobs (
    job_id     text PRIMARY KEY,
    clock_id   uuid NOT NULL REFERENCES test_clocks (id),
    tenant_id  text NOT NULL,
    due_at     timestamptz NOT NULL
);
CREATE INDEX test_clock_jobs_due_idx ON test_clock_jobs (clock_id, due_at);
