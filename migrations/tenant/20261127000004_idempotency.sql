-- Idempotency keys of mutations: a retried request with the same key appends nothing and
-- returns the first answer; the same key with a different request is refused.
CREATE TABLE idempotency_keys (
    actor_id     uuid NOT NULL,
    key          text NOT NULL,
    operation    text NOT NULL,
    -- SHA-256 of the operation's input, to tell a retry from a different request.
    request_hash text NOT NULL,
    -- The id of the record the first request produced; NULL while it is in flight.
    result       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (actor_id, key)
);
