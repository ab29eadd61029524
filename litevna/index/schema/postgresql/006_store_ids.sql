-- Store ids are never reused: caches and blob keys are keyed by them, so a store made
-- under a deleted store's label must not inherit its id (and with it cached answers).
CREATE TABLE counters (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) SELECT 'stores', COALESCE(MAX(id), 0) FROM stores;
