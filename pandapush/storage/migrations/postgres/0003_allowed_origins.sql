-- Version 3: an application may restrict the browser origins its channels are used from.
-- Space-separated normalised origins (scheme://host[:port]); empty: no restriction of its own.
ALTER TABLE applications ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
