-- The code a hospital's own event log knows it by: its aggregate id and the `tenant` of
-- every event's metadata. It is the directory code, except for a hospital restored from
-- a backup under another code (`hms restore-hospital --as NEWCODE`): its sealed events
-- keep the code they were written under, so the directory records it here. NULL: the
-- same as `code`.
ALTER TABLE tenants
    ADD COLUMN log_code text CHECK (log_code ~ '^[A-Z][A-Z0-9]{2,15}$');
