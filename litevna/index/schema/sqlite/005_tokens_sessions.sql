-- Revoked API keys and derived tokens (SPEC §3), kept until they would have expired anyway.
CREATE TABLE revocations (
    id TEXT PRIMARY KEY,
    store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    expires_at REAL,
    revoked_at REAL NOT NULL
);
CREATE INDEX revocations_expiry ON revocations (expires_at);
-- Web UI sessions (SPEC §2): the id is the SHA-256 of the cookie value, never the value.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX api_keys_store ON api_keys (store_id);
CREATE INDEX stores_owner ON stores (owner_id);
