-- Keys: only the SHA-256 of a secret is kept; the secret is shown once.
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    org         TEXT NOT NULL,
    team        TEXT NOT NULL,
    role        TEXT,
    label       TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX keys_org ON keys (org);

-- The audit chain. `body` is the record as hashed (canonical JSON); the other
-- columns repeat some of its fields for filtering, and `audit verify` checks
-- that they agree with it. `seq` orders the chain; `hash` =
-- SHA-256(prev_hash || "\n" || body).
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    id        TEXT NOT NULL UNIQUE,
    ts        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    call_id   TEXT,
    org       TEXT,
    principal TEXT,
    tool      TEXT,
    decision  TEXT,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_call ON audit (call_id);
CREATE INDEX audit_org_ts ON audit (org, ts);
