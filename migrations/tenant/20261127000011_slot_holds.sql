-- Slots held on doctors' and patients' day schedules (ADR 0002), from SlotReserved and
-- SlotReleased alone: a day view of who is booked when, and what the reservation sweep
-- compares with the appointments to find holds a broken booking left behind.
CREATE TABLE slot_holds (
    -- "<schedule type>/<schedule id>/<appointment id>": one hold per appointment per stream.
    id             text PRIMARY KEY,
    schedule_type  text NOT NULL,
    schedule_id    text NOT NULL,
    owner_id       uuid NOT NULL,
    local_date     date NOT NULL,
    appointment_id uuid NOT NULL,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    reserved_at    timestamptz NOT NULL
);

CREATE INDEX slot_holds_owner_day ON slot_holds (owner_id, local_date, start_at);
CREATE INDEX slot_holds_end ON slot_holds (end_at);
CREATE INDEX slot_holds_appointment ON slot_holds (appointment_id);
