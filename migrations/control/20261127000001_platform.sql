-- The platform database: the directory of hospitals (tenants) and the platform's own
-- super-administrator accounts. Patient data never lives here.

-- One row per hospital. `provisioning_step` records how far automatic provisioning got,
-- so an interrupted run is resumed by the next one instead of leaving a half-made tenant.
CREATE TABLE tenants (
    code               text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9]{2,15}$'),
    name               text NOT NULL,
    database_name      text NOT NULL UNIQUE,
    -- Which PostgreSQL server holds the tenant ('default' = the platform's own server).
    db_server          text NOT NULL DEFAULT 'default',
    status             text NOT NULL DEFAULT 'PROVISIONING'
                       CHECK (status IN ('PROVISIONING', 'ACTIVE', 'SUSPENDED', 'CANCELLED')),
    plan               text NOT NULL CHECK (plan IN ('TRIAL', 'BASIC', 'PROFESSIONAL', 'ENTERPRISE')),
    provisioning_step  text NOT NULL DEFAULT 'RESERVED'
                       CHECK (provisioning_step IN ('RESERVED', 'DATABASE_CREATED', 'MIGRATED', 'REGISTERED', 'READY')),
    -- The first administrator to create, kept only until provisioning is READY.
    -- Holds an argon2id hash, never a password.
    pending_admin      jsonb,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tenants_status ON tenants (status);

CREATE TABLE super_admins (
    id                  uuid PRIMARY KEY,
    username            text NOT NULL,
    email               text NOT NULL,
    password_hash       text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    active              boolean NOT NULL DEFAULT true,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- Usernames are unique ignoring case.
CREATE UNIQUE INDEX super_admins_username ON super_admins (lower(username));

-- The migrated template each tenant database is copied from, and the newest tenant
-- migration applied to it. Provisioning compares this with the binary's migrations
-- instead of connecting to the template: a connection to the template, even one just
-- closed, makes the next `CREATE DATABASE … TEMPLATE` wait for it to go away.
CREATE TABLE tenant_templates (
    database_name     text PRIMARY KEY,
    migration_version bigint NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
