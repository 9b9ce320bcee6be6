-- The newest seal of each hospital's event log (see the tenant table `event_seals`),
-- kept here, in another database than the log, so that rewriting a tenant database
-- (events and seals together) is still detected: the chain recomputed from the events
-- must pass through this hash at this position. `hms-replay verify` prints it as the
-- digest an auditor keeps.
CREATE TABLE tenant_log_heads (
    code        text PRIMARY KEY REFERENCES tenants (code),
    -- Number of events sealed (the chain_index of the head seal).
    chain_index bigint NOT NULL CHECK (chain_index >= 1),
    position    bigint NOT NULL,
    chain_hash  bytea  NOT NULL CHECK (length(chain_hash) = 32),
    sealed_at   timestamptz NOT NULL DEFAULT now()
);
