-- Pending actions: a call that waits for a human decision. The row is also
-- the call's durable task (SEP-2663) when the agent was given one.
-- status: pending -> approved | denied | expired | cancelled (once, never back).
-- execution: none -> running -> done; `running` is claimed by exactly one
-- process, so an approved action runs at most once.
CREATE TABLE approvals (
    id               TEXT PRIMARY KEY,
    org              TEXT NOT NULL,
    principal        TEXT NOT NULL,      -- key id
    principal_label  TEXT NOT NULL,      -- key:<id> (team, org)
    team             TEXT NOT NULL,
    tool             TEXT NOT NULL,
    upstream         TEXT,
    -- The arguments as sent, kept only while the action can still run.
    arguments        TEXT,
    arguments_redacted TEXT NOT NULL,
    digest           TEXT NOT NULL,      -- SHA-256 of the canonical arguments
    tool_hash        TEXT NOT NULL,      -- the tool definition it was asked under
    grant_id         TEXT,
    route            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    risk             TEXT,
    cost             BIGINT NOT NULL,
    hold_id          TEXT,
    call_id          TEXT NOT NULL,
    mode             TEXT NOT NULL,      -- wait | task
    status           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT,
    decided_by       TEXT,
    decision_reason  TEXT,
    execution        TEXT NOT NULL DEFAULT 'none',
    claimed_by       TEXT,
    result           TEXT,               -- the executed call's result (JSON), for retries and task polls
    reported         BIGINT NOT NULL DEFAULT 0, -- the agent has been told the final outcome
    rev              BIGINT NOT NULL,   -- store-wide change counter: feeds watch rows by it
    updated_at       BIGINT NOT NULL
);
CREATE INDEX approvals_org_status ON approvals (org, status, created_at);
CREATE INDEX approvals_binding ON approvals (principal, tool, digest);
CREATE INDEX approvals_expiry ON approvals (status, expires_at);
CREATE UNIQUE INDEX approvals_rev ON approvals (rev);

-- Outgoing webhook notifications, retried until delivered or out of attempts.
CREATE TABLE approval_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    route       TEXT NOT NULL,
    url         TEXT NOT NULL,
    state       TEXT NOT NULL,           -- pending | delivered | failed
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX approval_deliveries_due ON approval_deliveries (state, next_at);
CREATE INDEX approval_deliveries_approval ON approval_deliveries (approval_id);

CREATE TABLE delivery_attempts (
    delivery_id BIGINT NOT NULL REFERENCES approval_deliveries (id),
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    micros      BIGINT NOT NULL,
    status      BIGINT,                 -- HTTP status, if one came back
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- Signed decision callbacks already used: a replay is refused.
CREATE TABLE used_signatures (
    signature TEXT PRIMARY KEY,
    seen_at   BIGINT NOT NULL
);

-- One open action per exact call: a second identical call while one is open
-- resumes it instead of asking again.
CREATE UNIQUE INDEX approvals_open_binding ON approvals (principal, tool, digest, tool_hash) WHERE reported = 0;
