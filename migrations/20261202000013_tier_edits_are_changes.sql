-- A tier edit is a change like any other: audited, versioned, announced to every tenant whose
-- entitlement it changes.

-- The catalogue's version: every create, edit or retirement of a tier takes the next value and
-- stores it on the tier, so `max(catalog_version)` is the catalogue's version and two payloads
-- of one tier never share a version.
CREATE SEQUENCE tier_catalog_version;
ALTER TABLE tiers ADD COLUMN catalog_version bigint NOT NULL DEFAULT 0;

-- An edit of the catalogue concerns no one tenant: its audit row has no tenant (each tenant whose
-- entitlement it changed gets a `tier.changed` row of its own).
ALTER TABLE audit_events ALTER COLUMN tenant_id DROP NOT NULL;
CREATE INDEX audit_events_catalog_idx ON audit_events (subject_id, id) WHERE tenant_id IS NULL;

-- The fan-out walks a tier's tenants in id order, in bounded batches: the query 0009 said would
-- bring an index on tier_id back. A tenant's tier change now writes an entry here too (no HOT
-- update for that row); version bumps and other updates do not touch tier_id and stay HOT.
CREATE INDEX tenant_entitlements_tier_tenant_idx ON tenant_entitlements (tier_id, tenant_id);
