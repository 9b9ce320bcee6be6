-- What the platform knows about each hospital's activity and subscription, copied from
-- the hospital's own read models by `refresh_tenant_stats` (api/src/graphql/platform.rs).
-- The super administrator's dashboards read these rows, so listing thousands of
-- hospitals never opens thousands of tenant databases. Figures are as of `refreshed_at`;
-- the rows are disposable (a refresh recomputes them) and hold no patient data, only counts.
CREATE TABLE tenant_stats (
    code                text PRIMARY KEY REFERENCES tenants (code),
    -- The subscription as the hospital aggregate's read model shows it
    -- (TRIAL, ACTIVE, PAST_DUE, SUSPENDED, CANCELLED); distinct from `tenants.status`,
    -- which decides whether the hospital is reachable at all.
    subscription_status text NOT NULL,
    plan                text NOT NULL,
    billing_cycle       text,
    trial_ends_at       timestamptz,
    period_ends_at      timestamptz,
    status_reason       text,
    -- The sequence of the hospital aggregate's last event: what a client passes as
    -- `expectedVersion` to a subscription change.
    hospital_version    bigint NOT NULL DEFAULT 0 CHECK (hospital_version >= 0),
    -- When the hospital's event log last grew (any aggregate).
    last_activity_at    timestamptz,
    users               bigint NOT NULL DEFAULT 0 CHECK (users >= 0),
    active_users        bigint NOT NULL DEFAULT 0 CHECK (active_users >= 0),
    -- Patients not merged into another record.
    patients            bigint NOT NULL DEFAULT 0 CHECK (patients >= 0),
    appointments        bigint NOT NULL DEFAULT 0 CHECK (appointments >= 0),
    invoices            bigint NOT NULL DEFAULT 0 CHECK (invoices >= 0),
    -- When the tenant's figures were read; an older reading never replaces a newer one.
    refreshed_at        timestamptz NOT NULL
);

CREATE INDEX tenant_stats_subscription ON tenant_stats (subscription_status);

-- Money collected per hospital and currency, in minor units (hospitals bill in their
-- own currencies, so amounts are only ever added up per currency).
CREATE TABLE tenant_revenue (
    code           text NOT NULL REFERENCES tenant_stats (code) ON DELETE CASCADE,
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    paid_minor     bigint NOT NULL,
    refunded_minor bigint NOT NULL,
    PRIMARY KEY (code, currency)
);

-- Why and by whom the platform operator last closed a hospital (`tenants.status` =
-- 'SUSPENDED': nobody can sign in). Cleared when it is reopened. Subscription
-- suspensions are not recorded here: they are events in the hospital's own log.
ALTER TABLE tenants ADD COLUMN status_reason text;
ALTER TABLE tenants ADD COLUMN status_changed_by text;
