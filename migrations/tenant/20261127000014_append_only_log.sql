-- The event log, its seals and their encodings are append-only, enforced by the
-- database: UPDATE, DELETE and TRUNCATE are refused (a statement trigger raises) unless
-- the session has turned on `hms.log_repair`, a setting no code path of the server ever
-- sets; only deliberate operator work (and the tests that tamper on purpose) does.
--
-- This stops the server itself, a bug, or an injected statement running through the
-- server's pool from rewriting evidence, and makes any rewrite a deliberate act. It is
-- not a privilege boundary: any role that may set a custom setting (every role) can turn
-- it on, and an owner or superuser can drop the trigger. The boundary is a tenant-side
-- role that holds only INSERT and SELECT on these tables, with heads recorded under a
-- role the tenant side does not hold (README, "The log is append-only in the database").
--
-- PUBLIC is never granted anything here; the REVOKE makes that explicit should a default
-- privilege ever grant it.
REVOKE UPDATE, DELETE, TRUNCATE ON events, event_seals, event_seal_encodings FROM PUBLIC;

CREATE FUNCTION refuse_log_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('hms.log_repair', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % is refused: the event log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_rewrite();
CREATE TRIGGER event_seals_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON event_seals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_rewrite();
CREATE TRIGGER event_seal_encodings_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON event_seal_encodings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_rewrite();
