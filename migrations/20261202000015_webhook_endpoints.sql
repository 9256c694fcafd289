-- Webhook endpoints managed through the admin API (`/v1/webhook-endpoints`), each with its own
-- Standard Webhooks secret and event filter. Every committed change enqueues one `deliver_event`
-- job per enabled endpoint whose filter takes the event, in the change's transaction.
--
-- Secrets are stored as their `whsec_` text: the worker signs with them, so they cannot be
-- hashed. A rotation keeps the previous secret until `previous_secret_expires_at`; deliveries
-- are signed with both until then, so receivers switch without failed checks.
CREATE TABLE webhook_endpoints (
    id                         uuid PRIMARY KEY,
    url                        text NOT NULL,
    description                text NOT NULL DEFAULT '',
    -- Event types delivered; empty means every type.
    event_types                text[] NOT NULL DEFAULT '{}',
    status                     text NOT NULL DEFAULT 'enabled',
    disabled_reason            text,
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    CONSTRAINT webhook_endpoints_status_check CHECK (status IN ('enabled', 'disabled')),
    CONSTRAINT webhook_endpoints_previous_secret_check
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);

-- What every change reads: the enabled endpoints (a handful of rows).
CREATE INDEX webhook_endpoints_enabled_idx ON webhook_endpoints (created_at)
    WHERE status = 'enabled';
