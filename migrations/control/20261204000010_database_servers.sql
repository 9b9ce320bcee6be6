-- The PostgreSQL servers hospitals' databases are placed on (`hms servers …`). 'default'
-- is the platform database's own server: its address is DATABASE_URL's, never stored.
-- Another server's URL carries the credentials of a role that may create databases
-- there (as DATABASE_URL does for the platform's); it is read by the platform's
-- processes only and never printed.
CREATE TABLE database_servers (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,31}$'),
    url               text,
    -- Hospitals placement may put here.
    capacity          integer NOT NULL CHECK (capacity > 0),
    -- Connections each server process may hold to this server's hospital databases;
    -- NULL: HMS_TENANT_CONNECTION_BUDGET.
    connection_budget integer CHECK (connection_budget > 0),
    -- A draining server receives no new hospitals.
    draining          boolean NOT NULL DEFAULT false,
    added_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((name = 'default') = (url IS NULL))
);

INSERT INTO database_servers (name, url, capacity) VALUES ('default', NULL, 100000);

ALTER TABLE tenants
    ADD CONSTRAINT tenants_db_server_fkey FOREIGN KEY (db_server) REFERENCES database_servers (name);
CREATE INDEX tenants_db_server ON tenants (db_server);

-- A template database per server, under the same name on each.
ALTER TABLE tenant_templates ADD COLUMN db_server text NOT NULL DEFAULT 'default'
    REFERENCES database_servers (name) ON DELETE CASCADE;
ALTER TABLE tenant_templates DROP CONSTRAINT tenant_templates_pkey;
ALTER TABLE tenant_templates ADD PRIMARY KEY (db_server, database_name);
