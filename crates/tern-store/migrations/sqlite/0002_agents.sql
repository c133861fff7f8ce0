-- Remote agents and their one-time activation codes. Secrets are stored only as SHA-256 hashes.
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    site TEXT NOT NULL,
    queues TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    last_seen INTEGER,
    revoked_at INTEGER
);

CREATE TABLE activation_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    code_hash TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    queues TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    agent_id INTEGER
);
