-- Read models of the hospital and its staff, maintained by projectors from the events.
-- They are disposable: a rebuild from the log gives the same rows.

CREATE TABLE hospital_profile (
    code                text PRIMARY KEY,
    name                text NOT NULL,
    plan                text NOT NULL,
    billing_cycle       text,
    subscription_status text NOT NULL,
    trial_ends_at       timestamptz,
    period_ends_at      timestamptz,
    status_reason       text,
    modules             text[] NOT NULL DEFAULT '{}',
    -- Value objects of the domain, stored as the events carry them.
    profile             jsonb,
    branding            jsonb NOT NULL DEFAULT '{}',
    settings            jsonb,
    registered_at       timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE departments (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX departments_name ON departments (lower(name));

CREATE TABLE staff (
    id                  uuid PRIMARY KEY,
    username            text NOT NULL,
    email               text NOT NULL,
    full_name           text NOT NULL,
    role                text NOT NULL,
    department_id       uuid,
    active              boolean NOT NULL,
    -- Needed by login; never exposed through the API.
    password_hash       text NOT NULL,
    password_changed_at timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- Login looks users up by username, ignoring case.
CREATE UNIQUE INDEX staff_username ON staff (lower(username));
CREATE INDEX staff_role_active ON staff (role, active);
CREATE INDEX staff_department ON staff (department_id) WHERE department_id IS NOT NULL;
