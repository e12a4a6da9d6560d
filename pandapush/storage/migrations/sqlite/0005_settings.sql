-- Version 5: values every node on the database shares, by name. The first is the generated
-- admin password's hash (admin_password), so that nodes on one database agree on it.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
