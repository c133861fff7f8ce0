-- Variables kept by the control plane (`tern variables`, `{{ var.value.KEY }}` in templates).
-- A secret variable's value is encrypted by the control plane (AES-256-GCM) before it gets here.
CREATE TABLE variables (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    is_secret INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);
