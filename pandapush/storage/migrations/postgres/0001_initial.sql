-- Version 1: the tables upstream's knex migrations made (applications, their admins, keys),
-- without revocation or usage counters.
CREATE TABLE applications (
    id VARCHAR(64) PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE application_admins (
    application_id VARCHAR(64) NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    PRIMARY KEY (application_id, username)
);

CREATE INDEX application_admins_username ON application_admins (username);

CREATE TABLE keys (
    id VARCHAR(64) PRIMARY KEY,
    application_id VARCHAR(64) NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    expires TIMESTAMPTZ,
    purpose TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX keys_application_id ON keys (application_id);
