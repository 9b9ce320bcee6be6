-- One data key per patient, wrapped under the platform's master key (projections/src/
-- personal.rs, ADR 0008). The personal data in a patient's events is sealed under it;
-- erasing the patient destroys it (both columns null, `destroyed_at` set), and the row
-- stays as the record that the key existed and when it was destroyed.

CREATE TABLE patient_keys (
    patient_id     uuid PRIMARY KEY,
    -- The first 16 hex digits of SHA-256 of the master key that wraps the key.
    master_key_id  text,
    -- nonce ‖ XChaCha20-Poly1305(data key), the patient id as associated data.
    wrapped_key    bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    destroyed_at   timestamptz,
    CHECK ((wrapped_key IS NULL) = (master_key_id IS NULL)),
    CHECK (destroyed_at IS NULL OR wrapped_key IS NULL)
);

-- Whether a patient's personal data is erased (the read model shows `[erased]`).
ALTER TABLE patients ADD COLUMN erased boolean NOT NULL DEFAULT false;
