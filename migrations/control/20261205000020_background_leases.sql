-- Periodic background work that one replica should do per hospital and period (the
-- reservation sweep, the statistics refresh): a replica does it only if it takes the
-- lease, which expires on its own, so when the holder dies another replica takes the
-- work over on its next period.
CREATE TABLE background_leases (
    task       text NOT NULL,
    code       text NOT NULL,
    holder     uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (task, code)
);
