-- Replicas hear of each other's changes through `LISTEN tollgate`: a commit
-- that changes approvals, admin grants and pins, or keys notifies with what
-- changed. Triggers rather than calls in the code, so every writer through
-- tollgate's store (a gateway, the CLI) is heard. Admin changes are heard
-- through `admin_changes`, which every grant and pin change inserts into
-- (an operator editing `grants` by hand must insert there too). PostgreSQL
-- delivers a notification when its transaction commits, once per payload.
--
-- A topic with a row in `generations` has it bumped in the same
-- transaction: a replica reads it when a request arrives, so a key change
-- committed on another replica before the request is in force for it,
-- whether or not the notification has arrived yet (read-your-writes across
-- replicas; the notification is what pushes changes to idle replicas). Only
-- keys need one: admin changes are counted by `admin_changes` itself, and
-- approvals are followed by their `rev`.
CREATE TABLE generations (
    topic TEXT PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO generations (topic, n) VALUES ('keys', 0);

CREATE FUNCTION tollgate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generations SET n = n + 1 WHERE topic = TG_ARGV[0];
    PERFORM pg_notify('tollgate', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER approvals_notify AFTER INSERT OR UPDATE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify('approvals');
CREATE TRIGGER admin_notify AFTER INSERT ON admin_changes
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify('admin');
CREATE TRIGGER keys_notify AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_notify('keys');
