-- Replicas hear of each other's changes through `LISTEN tollgate`: a commit
-- that changes approvals, admin grants and pins, or keys notifies with what
-- changed. Triggers rather than calls in the code, so every writer (a
-- gateway, the CLI, an operator's SQL) is heard. PostgreSQL delivers a
-- notification when its transaction commits, once per payload.
CREATE FUNCTION tollgate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
