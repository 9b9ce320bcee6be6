-- The event store of one hospital: the system of record and its audit trail.
--
-- Columns up to `metadata` are the ones postgres-es writes (it inserts with an explicit
-- column list). The rest are filled in by the database:
--   position        a global, gap-tolerant ordering number;
--   transaction_id  the writing transaction, so a reader that tails the log in
--                   (transaction_id, position) order and stops below
--                   pg_snapshot_xmin(pg_current_snapshot()) never skips an event whose
--                   transaction was still in flight (bigserial values commit out of order);
--   recorded_at     the database's commit-side clock, independent of the client.
-- The primary key gives optimistic concurrency per aggregate. postgres-es reports any
-- unique violation here as a conflict, so no other unique index may be added.
CREATE TABLE events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 0),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        jsonb  NOT NULL,
    metadata       jsonb  NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8   NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_log_order ON events (transaction_id, position);

-- Only used if snapshots are enabled (they are not: see DESIGN.md, stack notes).
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- One row per projector: the last event it applied, written in the same transaction as
-- the read-model change, so a crash neither loses nor repeats an event.
CREATE TABLE projection_checkpoints (
    projector           text PRIMARY KEY,
    last_transaction_id xid8   NOT NULL DEFAULT '0',
    last_position       bigint NOT NULL DEFAULT 0,
    events_applied      bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Set while the projector is stuck on an event; cleared when it moves past it.
    failing_position    bigint,
    last_error          text
);

-- Medical record numbers and invoice numbers come from sequences of the hospital's own
-- database: race-free, per hospital, and not through a long aggregate stream.
CREATE SEQUENCE mrn_seq START 1;
CREATE SEQUENCE invoice_number_seq START 1;
