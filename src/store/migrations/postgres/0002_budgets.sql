-- Budgets: from policy files (source = 'file:<path>') or set through the CLI
-- or API (source = 'api'). Amounts are integers: micro-units of money, or tokens.
CREATE TABLE budgets (
    id           TEXT PRIMARY KEY,
    scope        TEXT NOT NULL,
    org          TEXT,
    unit         TEXT NOT NULL,
    limit_amount BIGINT NOT NULL,
    period       TEXT NOT NULL,
    source       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX budgets_scope ON budgets (scope);

-- What a budget has spent and holds in one period (period_start: Unix
-- microseconds of the period's first instant, UTC; 0 for period "none").
CREATE TABLE budget_usage (
    budget_id    TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    spent        BIGINT NOT NULL DEFAULT 0,
    held         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start)
);

-- A hold resolves exactly once: state goes from 'held' to 'settled',
-- 'released' or 'expired', and never back.
CREATE TABLE holds (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    call_id     TEXT,
    principal   TEXT,
    tool        TEXT,
    amount      BIGINT NOT NULL,
    tokens      BIGINT NOT NULL,
    state       TEXT NOT NULL,
    charged     BIGINT,
    charged_tokens BIGINT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    resolved_at BIGINT,
    -- The budgets it holds on: JSON [[budget_id, period_start, unit, amount], ...]
    lines       TEXT NOT NULL
);
CREATE INDEX holds_open ON holds (state, expires_at);
CREATE INDEX holds_owner ON holds (owner, state);


-- Admin changes carrying an idempotency key apply once; a retry gets the
-- first answer back.
CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
