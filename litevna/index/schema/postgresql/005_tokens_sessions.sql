-- Revoked API keys and derived tokens (SPEC §3), kept until they would have expired anyway.
CREATE TABLE revocations (
    id TEXT COLLATE "C" PRIMARY KEY,
    store_id BIGINT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX revocations_expiry ON revocations (expires_at);
-- Web UI sessions (SPEC §2): the id is the SHA-256 of the cookie value, never the value.
CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX api_keys_store ON api_keys (store_id);
CREATE INDEX stores_owner ON stores (owner_id);
