-- Version 4: webhooks. Each application's endpoints; the outbox of events waiting to be
-- sent (ordered by seq, leased by the node sending them); each endpoint's recent deliveries.
-- Times in the outbox are milliseconds since the epoch (compared, never shown).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    allow_private INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX webhooks_application_id ON webhooks (application_id);

CREATE TABLE webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    name TEXT NOT NULL,
    user_id TEXT,
    data TEXT,
    created_ms INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    lease_owner TEXT NOT NULL DEFAULT '',
    leased_until_ms INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX webhook_outbox_channel ON webhook_outbox (endpoint_id, channel, seq);

CREATE INDEX webhook_outbox_due ON webhook_outbox (due_ms);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    events TEXT NOT NULL
);

CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, time_ms);
