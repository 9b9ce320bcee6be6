-- The `hms serve` processes of the platform, each with a heartbeat, so that the work one
-- leaves behind (sealing and catching up the hospitals it wrote to) is taken over by
-- another when it dies or does no background work. A row is removed at a graceful stop
-- and by the others an hour after its last heartbeat.
CREATE TABLE replicas (
    id          uuid PRIMARY KEY,
    -- Runs the projection daemon (HMS_BACKGROUND_WORK).
    background  boolean NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
