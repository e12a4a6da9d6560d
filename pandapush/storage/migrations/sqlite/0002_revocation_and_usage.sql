-- Version 2: keys can be revoked, and their use is counted (in batches, off the hot path).
ALTER TABLE keys ADD COLUMN revoked_at TEXT;

ALTER TABLE keys ADD COLUMN last_used TEXT;

ALTER TABLE keys ADD COLUMN use_count INTEGER NOT NULL DEFAULT 0;

-- The admin console's key is looked up by (application, purpose).
CREATE INDEX keys_application_purpose ON keys (application_id, purpose);
