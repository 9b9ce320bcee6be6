-- The tamper-evident seal of the event log, kept by the `seal` projector (LogSealer).
--
-- Row i links event i of the log, in commit order (transaction_id, position), to the
-- one before it: chain_hash_i = SHA-256(chain_hash_{i-1} || canonical bytes of event i),
-- with 32 zero bytes before the first event. The canonical bytes are defined in
-- projections/src/projectors/seal.rs and cover every column of the event except
-- transaction_id (which a restore onto another cluster does not keep meaningful).
--
-- The projector writes these rows in the same transaction as its checkpoint, so the
-- chain never skips or repeats an event. Rows are deterministic (no clock), so a
-- replay of an untouched log gives the same table. The newest row (the head) is copied
-- into the platform database (`tenant_log_heads`), out of reach of whoever can write
-- this database; `hms-replay verify` recomputes the chain and compares both.
CREATE TABLE event_seals (
    -- 1, 2, 3 … in commit order: the place of the event in the chain.
    chain_index   bigint PRIMARY KEY CHECK (chain_index >= 1),
    -- The sealed event (events.position).
    position      bigint NOT NULL UNIQUE,
    -- The position of the event sealed just before; NULL for the first.
    prev_position bigint,
    chain_hash    bytea  NOT NULL CHECK (length(chain_hash) = 32)
);
