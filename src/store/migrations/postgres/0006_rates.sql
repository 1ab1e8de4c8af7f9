-- Rate limits across replicas: one GCRA bucket per grant and key, kept as
-- its theoretical arrival time (Unix microseconds). A take is one statement
-- (row lock only, not the write lock). SQLite keeps buckets in memory: one
-- gateway process serves a SQLite store.
CREATE TABLE rate_buckets (
    grant_id TEXT NOT NULL,
    key_id   TEXT NOT NULL,
    tat      BIGINT NOT NULL,
    PRIMARY KEY (grant_id, key_id)
);
CREATE INDEX rate_buckets_tat ON rate_buckets (tat);
