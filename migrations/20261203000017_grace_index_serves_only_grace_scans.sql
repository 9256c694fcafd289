-- A tenant's pending transition is looked up by `tenant_id = … AND status = 'pending'` in every
-- request's and job's locking read (`tenants.rs`); tier_transitions_one_pending_per_tenant serves
-- it. But tier_transitions_grace_ends_idx's predicate (`status = 'pending'`) matched the lookup
-- too, and a plan made while tier_transitions was empty (a new database; plans are cached per
-- connection, and job transactions use generic plans) chose it, then scanned every pending
-- transition for each tenant: with 4,000 pending, a tier fan-out batch's locking read took
-- 60-110 ms instead of under 1 ms. Every grace scan compares grace_ends_at (`<`, `<=`, `>`),
-- which implies the IS NOT NULL added here, so they keep the index; lookups by tenant no longer
-- match it. (A pending transition always has a grace end: tier_transitions_pending_has_grace.)
DROP INDEX tier_transitions_grace_ends_idx;
CREATE INDEX tier_transitions_grace_ends_idx ON tier_transitions (grace_ends_at)
    WHERE status = 'pending' AND grace_ends_at IS NOT NULL;
