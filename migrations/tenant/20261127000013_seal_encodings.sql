-- Seal encodings. Encoding v2 hashes an event's JSON as PostgreSQL renders the stored
-- jsonb instead of re-serialising it (v1). Seals keep the encoding they were made with,
-- so an intact log sealed before the change still verifies: this table says from which
-- seal number on each encoding holds (see projections/src/projectors/seal.rs).
--
-- Like the seals, it is evidence: changing it changes every recomputed link after the
-- entry, which `hms-replay verify` reports as altered events.
CREATE TABLE event_seal_encodings (
    from_chain_index bigint   PRIMARY KEY CHECK (from_chain_index >= 1),
    encoding         smallint NOT NULL CHECK (encoding IN (1, 2))
);

-- A chain already begun was sealed under v1; the sealer continues it under v2.
INSERT INTO event_seal_encodings (from_chain_index, encoding)
SELECT 1, 1 WHERE EXISTS (SELECT 1 FROM event_seals);
INSERT INTO event_seal_encodings (from_chain_index, encoding)
SELECT coalesce(max(chain_index), 0) + 1, 2 FROM event_seals;
