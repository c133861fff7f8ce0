-- Remote agents and their one-time activation codes. Secrets are stored only as SHA-256 hashes.
CREATE TABLE agents (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    site TEXT NOT NULL,
    queues TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    version TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    last_seen BIGINT,
    revoked_at BIGINT
);

CREATE TABLE activation_codes (
    id BIGSERIAL PRIMARY KEY,
    code_hash TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    queues TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    agent_id BIGINT
);
