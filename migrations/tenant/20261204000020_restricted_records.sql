-- Restricted records and break-glass access. `patients.restricted` lets lists withhold a
-- restricted record beyond the patient's identity; whether a reader may open the record is
-- decided on the write side. `break_glass_accesses` is the privacy officer's review queue,
-- one row per grant, filled by the `break_glass` projector.

ALTER TABLE patients ADD COLUMN restricted boolean NOT NULL DEFAULT false;

CREATE TABLE break_glass_accesses (
    grant_id           uuid PRIMARY KEY,
    patient_id         uuid NOT NULL,
    user_id            uuid NOT NULL,
    username           text NOT NULL,
    role               text NOT NULL,
    reason             text NOT NULL,
    note               text NOT NULL,
    opened_at          timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    -- JUSTIFIED or NOT_JUSTIFIED once reviewed.
    outcome            text,
    review_note        text,
    reviewer_id        uuid,
    reviewer_username  text,
    reviewed_at        timestamptz
);

CREATE INDEX break_glass_accesses_queue ON break_glass_accesses (opened_at, grant_id) WHERE outcome IS NULL;
CREATE INDEX break_glass_accesses_patient ON break_glass_accesses (patient_id, opened_at);
CREATE INDEX break_glass_accesses_opened ON break_glass_accesses (opened_at, grant_id);
