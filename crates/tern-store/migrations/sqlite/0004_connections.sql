-- Connections kept by the control plane. The URI and extra fields are encrypted by the control
-- plane (AES-256-GCM) before they get here; the plain columns hold only what lists show.
CREATE TABLE connections (
    name TEXT PRIMARY KEY,
    conn_type TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    login TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
