-- tierflow's domain tables: tiers, tenant entitlements, restrictions per source, transitions,
-- the timed actions they schedule, overrides, audit events and idempotency keys.

CREATE TABLE tiers (
    tier_id     text PRIMARY KEY CONSTRAINT tiers_tier_id_format CHECK (tier_id ~ '^[a-z0-9_-]{1,32}$'),
    name        text NOT NULL,
    category    text NOT NULL CONSTRAINT tiers_category_known CHECK (category IN ('free', 'paid', 'enterprise')),
    -- Orders tiers: higher is more; equal ranks are lateral moves.
    rank        integer NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    features    jsonb NOT NULL DEFAULT '{}' CONSTRAINT tiers_features_object CHECK (jsonb_typeof(features) = 'object'),
    limits      jsonb NOT NULL DEFAULT '{}' CONSTRAINT tiers_limits_object CHECK (jsonb_typeof(limits) = 'object'),
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per tenant. The row is the tenant's lock: every change takes it FOR UPDATE first.
-- The four restriction flags are not stored here; they derive from tenant_restrictions.
CREATE TABLE tenant_entitlements (
    tenant_id     text PRIMARY KEY,
    tier_id       text NOT NULL REFERENCES tiers (tier_id),
    status        text NOT NULL DEFAULT 'active'
                  CONSTRAINT tenant_entitlements_status_known CHECK (status IN ('active', 'suspended', 'expired')),
    effective_at  timestamptz NOT NULL,
    expires_at    timestamptz,
    -- Bumped by every change; orders downstream events and proves no update was lost.
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_entitlements_tier_idx ON tenant_entitlements (tier_id);

CREATE TABLE tier_transitions (
    id                      uuid PRIMARY KEY,
    tenant_id               text NOT NULL REFERENCES tenant_entitlements (tenant_id),
    kind                    text NOT NULL CONSTRAINT tier_transitions_kind_known
                            CHECK (kind IN ('provision', 'upgrade', 'downgrade', 'lateral', 'suspension', 'reactivation')),
    status                  text NOT NULL CONSTRAINT tier_transitions_status_known
                            CHECK (status IN ('pending', 'effective', 'cancelled')),
    from_tier_id            text REFERENCES tiers (tier_id),
    to_tier_id              text NOT NULL REFERENCES tiers (tier_id),
    from_status             text,
    to_status               text NOT NULL,
    reason                  text,
    requested_by            text NOT NULL,
    requested_at            timestamptz NOT NULL,
    effective_at            timestamptz NOT NULL,
    grace_ends_at           timestamptz,
    cancelled_at            timestamptz,
    -- Deferred: a replacing downgrade is inserted after the one it cancels leaves `pending`.
    cancelled_by            uuid REFERENCES tier_transitions (id) DEFERRABLE INITIALLY DEFERRED,
    idempotency_key         text,
    -- The tenant's version once this request committed.
    tenant_version          bigint NOT NULL,
    CONSTRAINT tier_transitions_pending_has_grace CHECK (status <> 'pending' OR grace_ends_at IS NOT NULL)
);
-- History, newest first, cursor-paginated by (requested_at, id).
CREATE INDEX tier_transitions_tenant_history_idx ON tier_transitions (tenant_id, requested_at DESC, id DESC);
-- At most one downgrade waits in grace per tenant; the rules keep it so, the index proves it.
CREATE UNIQUE INDEX tier_transitions_one_pending_per_tenant ON tier_transitions (tenant_id) WHERE status = 'pending';
-- Grace deadlines, for operators and the lateness SLO.
CREATE INDEX tier_transitions_grace_ends_idx ON tier_transitions (grace_ends_at) WHERE status = 'pending';

-- Restrictions stored per source: a flag is on while any source holds it.
CREATE TABLE tenant_restrictions (
    tenant_id      text NOT NULL REFERENCES tenant_entitlements (tenant_id),
    source         text NOT NULL,
    restriction    text NOT NULL CONSTRAINT tenant_restrictions_known
                   CHECK (restriction IN ('voice_disabled', 'sla_frozen', 'escalation_frozen', 'routing_degraded')),
    transition_id  uuid REFERENCES tier_transitions (id),
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, source, restriction)
);

-- The timed actions a transition scheduled, one row per action: the domain record that makes each
-- job's effect happen once, whatever happens to the job rows (retries, pruning).
CREATE TABLE transition_actions (
    transition_id  uuid NOT NULL REFERENCES tier_transitions (id),
    action         text NOT NULL CONSTRAINT transition_actions_known
                   CHECK (action IN ('voice_disable', 'sla_freeze', 'apply_downgrade')),
    tenant_id      text NOT NULL,
    due_at         timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'scheduled'
                   CONSTRAINT transition_actions_status_known CHECK (status IN ('scheduled', 'done', 'cancelled')),
    job_id         text,
    executed_at    timestamptz,
    PRIMARY KEY (transition_id, action)
);

CREATE TABLE entitlement_overrides (
    id                uuid PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenant_entitlements (tenant_id),
    entitlement_type  text NOT NULL CONSTRAINT entitlement_overrides_type_known
                      CHECK (entitlement_type IN ('leads', 'scoring', 'routing', 'voice', 'api')),
    original_limit    bigint,
    override_limit    bigint NOT NULL CONSTRAINT entitlement_overrides_limit_nonnegative CHECK (override_limit >= 0),
    reason            text NOT NULL CONSTRAINT entitlement_overrides_reason_known
                      CHECK (reason IN ('emergency', 'incident', 'compliance')),
    granted_by        text NOT NULL,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'active'
                      CONSTRAINT entitlement_overrides_status_known CHECK (status IN ('active', 'expired', 'removed', 'replaced')),
    ended_at          timestamptz,
    ended_by          text,
    CONSTRAINT entitlement_overrides_expiry_after_creation CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX entitlement_overrides_one_active_per_type
    ON entitlement_overrides (tenant_id, entitlement_type) WHERE status = 'active';
CREATE INDEX entitlement_overrides_expiry_idx ON entitlement_overrides (expires_at) WHERE status = 'active';

-- Every change: who, what, when, why, from which request.
CREATE TABLE audit_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    actor            text NOT NULL,
    action           text NOT NULL,
    subject_type     text NOT NULL,
    subject_id       text NOT NULL,
    reason           text,
    idempotency_key  text,
    details          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX audit_events_subject_idx ON audit_events (subject_type, subject_id);

-- Idempotency keys, scoped per tenant. The stored response is replayed for the same key and
-- fingerprint; another fingerprint under the same key is a conflict.
CREATE TABLE idempotency_keys (
    tenant_id        text NOT NULL,
    idempotency_key  text NOT NULL,
    operation        text NOT NULL,
    fingerprint      text NOT NULL,
    response         jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
