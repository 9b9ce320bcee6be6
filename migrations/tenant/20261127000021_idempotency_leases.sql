-- Idempotency claims become leases (docs/adr/0004): a claim names the live attempt that
-- owns it and is renewed while that attempt runs, so a claim left by a dead request
-- (kill -9, client gone, timeout) goes stale and a retry takes it over instead of
-- waiting forever.
--   run_id     stamped on every event the work appends (metadata `idempotency_run`): a
--              takeover keeps it, so the write side tells which commands of the run
--              committed already; a fresh claim (after an attempt that failed) gets a new one.
--   owner      the attempt now running the work; NULL once the row has its result.
--   claimed_at renewed by the owner's heartbeat; older than the lease means a dead owner.
ALTER TABLE idempotency_keys
    ADD COLUMN run_id     uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN owner      uuid,
    ADD COLUMN claimed_at timestamptz;
UPDATE idempotency_keys SET claimed_at = created_at;
ALTER TABLE idempotency_keys
    ALTER COLUMN claimed_at SET NOT NULL,
    ALTER COLUMN claimed_at SET DEFAULT now();
