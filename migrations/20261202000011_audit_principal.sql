-- Every audit row says who was authenticated for the change (the principal: a token's name and
-- role, the operator running the CLI, the job that acted) beside the actor the request stated.
-- A caller can name another actor; it cannot change its principal. Rows written before this
-- migration have no known principal.
ALTER TABLE audit_events
    ADD COLUMN principal text NOT NULL DEFAULT 'unknown',
    ADD COLUMN principal_role text NOT NULL DEFAULT 'unknown'
        CONSTRAINT audit_events_principal_role_known
        CHECK (principal_role IN ('service', 'admin', 'operator', 'worker', 'library', 'unknown'));
-- New rows must say it: no default from now on.
ALTER TABLE audit_events ALTER COLUMN principal DROP DEFAULT, ALTER COLUMN principal_role DROP DEFAULT;

-- The trail is read per tenant in write order (GET /v1/tenants/{id}/audit, `tierflow audit`),
-- paged by id; time and kind are filters on that walk.
CREATE INDEX audit_events_tenant_id_idx ON audit_events (tenant_id, id);
DROP INDEX audit_events_tenant_idx;
