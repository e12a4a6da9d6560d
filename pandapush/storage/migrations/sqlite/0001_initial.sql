-- Version 1: the tables upstream's knex migrations made (applications, their admins, keys),
-- without revocation or usage counters. Times are ISO 8601 text in UTC.
CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE application_admins (
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    PRIMARY KEY (application_id, username)
);

CREATE INDEX application_admins_username ON application_admins (username);

CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    expires TEXT,
    purpose TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX keys_application_id ON keys (application_id);
