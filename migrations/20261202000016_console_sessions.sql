-- Operator console sessions (crates/tierflow-api/src/console/session.rs).
--
-- A session is a row, not a signed cookie: every API replica reads the same table, so a sign-in on
-- one replica works on all of them with no key to distribute, and a sign-out ends the session
-- everywhere at once (a signed cookie stays valid until it expires, whatever the operator did).
-- The cookie carries a random 256-bit id; only its SHA-256 is stored, so a copy of this table
-- opens no session. The API token the operator signed in with is never stored: only the token's
-- name and role, which are checked against the configured tokens on every request (removing a
-- token from the configuration ends its sessions).
CREATE TABLE console_sessions (
    id_sha256   bytea PRIMARY KEY CONSTRAINT console_sessions_id_is_a_digest CHECK (length(id_sha256) = 32),
    principal   text NOT NULL,
    role        text NOT NULL CONSTRAINT console_sessions_role_known CHECK (role IN ('service', 'admin')),
    -- The synchronizer token every state-changing form carries.
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
-- Sign-in deletes expired sessions: a range scan from the oldest.
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- The console's overview reports grace lateness (apply_downgrade's start − grace end) over the
-- last hour: a partial index on the applied grace ends keeps that a short range scan however many
-- transitions the table keeps. One entry per downgrade, written once.
CREATE INDEX transition_actions_applied_idx ON transition_actions (executed_at)
    WHERE action = 'apply_downgrade' AND status = 'done';

-- The console's tenant page lists a tenant's overrides, ended ones too; until now only active
-- overrides were indexed by tenant (the unique one-active-per-type index).
CREATE INDEX entitlement_overrides_tenant_idx ON entitlement_overrides (tenant_id, created_at DESC);
