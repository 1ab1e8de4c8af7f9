-- Grants made through the admin API. `spec` is the grant as the API takes
-- it (JSON); `revision` increases with every change and is the grant's ETag.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    org        TEXT NOT NULL,
    spec       TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX grants_org ON grants (org);

-- Every change of an API grant: who, when, what it became, and the diff.
-- Kept after the grant is deleted; a grant made again under the same id
-- continues its revisions.
CREATE TABLE grant_revisions (
    grant_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    org      TEXT NOT NULL,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    spec     TEXT,
    diff     TEXT NOT NULL,
    PRIMARY KEY (grant_id, revision)
);

-- Tool pins set by admins, overriding the manifest's pin for one upstream
-- tool: `hash` is the accepted definition; NULL means explicitly unpinned.
CREATE TABLE tool_pins (
    upstream   TEXT NOT NULL,
    tool       TEXT NOT NULL,
    hash       TEXT,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (upstream, tool)
);

-- One row per admin change of grants or pins: other processes on the same
-- store notice a new row and reload.
CREATE TABLE admin_changes (
    seq  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    what TEXT NOT NULL,
    at   BIGINT NOT NULL
);
