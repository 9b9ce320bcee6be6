-- Read models of patients, appointments, invoices, the audit index and the patient
-- record access log. Maintained by projectors; rebuilt from the log at will. Projector
-- SQL names these tables unqualified (see projections/src/rebuild.rs).

CREATE TABLE patients (
    id             uuid PRIMARY KEY,
    mrn            text NOT NULL,
    given_name     text,
    middle_name    text,
    family_name    text NOT NULL,
    -- Lower-case, accent-free forms for search (made by the projector, so the query
    -- side normalizes its input the same way).
    given_key      text NOT NULL DEFAULT '',
    family_key     text NOT NULL,
    date_of_birth  date NOT NULL,
    sex            text NOT NULL,
    phone          text,
    -- Digits only, for phone search regardless of formatting.
    phone_digits   text,
    email          text,
    demographics   jsonb NOT NULL,
    allergies      jsonb NOT NULL DEFAULT '[]',
    alerts         jsonb NOT NULL DEFAULT '[]',
    -- ACTIVE, INACTIVE, DECEASED or MERGED.
    status         text NOT NULL,
    died_at        timestamptz,
    merged_into    uuid,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE UNIQUE INDEX patients_mrn ON patients (mrn);
CREATE INDEX patients_family_key ON patients (family_key text_pattern_ops, given_key);
CREATE INDEX patients_given_key ON patients (given_key text_pattern_ops);
CREATE INDEX patients_date_of_birth ON patients (date_of_birth);
CREATE INDEX patients_phone_digits ON patients (phone_digits) WHERE phone_digits IS NOT NULL;
CREATE INDEX patients_registered ON patients (registered_at, id);

CREATE TABLE appointments (
    id             uuid PRIMARY KEY,
    patient_id     uuid NOT NULL,
    doctor_id      uuid NOT NULL,
    department_id  uuid,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    -- The hospital's local day of the start (a doctor's day).
    local_date     date NOT NULL,
    reason         text NOT NULL,
    status         text NOT NULL,
    notes          text,
    cancel_reason  text,
    checked_in_at  timestamptz,
    started_at     timestamptz,
    completed_at   timestamptz,
    cancelled_at   timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE INDEX appointments_doctor_day ON appointments (doctor_id, local_date, start_at);
CREATE INDEX appointments_patient ON appointments (patient_id, start_at);
CREATE INDEX appointments_department_day ON appointments (department_id, local_date) WHERE department_id IS NOT NULL;
CREATE INDEX appointments_status_day ON appointments (status, local_date);
CREATE INDEX appointments_start ON appointments (start_at, id);

CREATE TABLE invoices (
    id               uuid PRIMARY KEY,
    number           text NOT NULL,
    patient_id       uuid NOT NULL,
    appointment_id   uuid,
    currency         text NOT NULL,
    -- DRAFT, ISSUED, PARTIALLY_PAID, PAID, VOID or REFUNDED.
    status           text NOT NULL,
    -- Money in integer minor units of `currency`, as the events carry it.
    subtotal_minor   bigint NOT NULL DEFAULT 0,
    discount_minor   bigint NOT NULL DEFAULT 0,
    tax_minor        bigint NOT NULL DEFAULT 0,
    total_minor      bigint NOT NULL DEFAULT 0,
    paid_minor       bigint NOT NULL DEFAULT 0,
    refunded_minor   bigint NOT NULL DEFAULT 0,
    balance_minor    bigint NOT NULL DEFAULT 0,
    discount         jsonb NOT NULL DEFAULT '"NONE"',
    tax_basis_points integer NOT NULL DEFAULT 0,
    due_date         date,
    issued_at        timestamptz,
    voided_at        timestamptz,
    void_reason      text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE UNIQUE INDEX invoices_number ON invoices (number);
CREATE INDEX invoices_patient ON invoices (patient_id, created_at);
CREATE INDEX invoices_status ON invoices (status, created_at);
CREATE INDEX invoices_outstanding ON invoices (balance_minor) WHERE status IN ('ISSUED', 'PARTIALLY_PAID');
CREATE INDEX invoices_created ON invoices (created_at, id);

CREATE TABLE invoice_lines (
    line_id          uuid PRIMARY KEY,
    invoice_id       uuid NOT NULL,
    code             text NOT NULL,
    description      text NOT NULL,
    quantity         integer NOT NULL,
    unit_price_minor bigint NOT NULL,
    amount_minor     bigint NOT NULL,
    added_at         timestamptz NOT NULL
);

CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, added_at);

-- Payments and refunds, in the order they happened.
CREATE TABLE invoice_payments (
    id           uuid PRIMARY KEY,
    invoice_id   uuid NOT NULL,
    -- PAYMENT or REFUND; a refund names the payment it refunds.
    kind         text NOT NULL,
    payment_id   uuid NOT NULL,
    method       text,
    amount_minor bigint NOT NULL,
    reference    text,
    reason       text,
    at           timestamptz NOT NULL
);

CREATE INDEX invoice_payments_invoice ON invoice_payments (invoice_id, at);
CREATE INDEX invoice_payments_at ON invoice_payments (at) WHERE kind = 'PAYMENT';

-- One row per event: who did what to which record, when. Audit queries filter here and
-- read payloads from `events` by position.
CREATE TABLE audit_index (
    position       bigint PRIMARY KEY,
    transaction_id bigint NOT NULL,
    recorded_at    timestamptz NOT NULL,
    actor_id       uuid,
    actor_username text,
    actor_role     text,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    request_id     text
);

CREATE INDEX audit_index_commit_order ON audit_index (transaction_id, position);
CREATE INDEX audit_index_time ON audit_index (recorded_at);
CREATE INDEX audit_index_actor ON audit_index (actor_id, transaction_id, position);
CREATE INDEX audit_index_aggregate ON audit_index (aggregate_type, aggregate_id, sequence);
CREATE INDEX audit_index_event_type ON audit_index (event_type, transaction_id, position);

-- Who opened which patient record, when, from where.
CREATE TABLE patient_access_log (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL,
    viewer_id       uuid NOT NULL,
    viewer_username text NOT NULL,
    viewer_role     text NOT NULL,
    purpose         text NOT NULL,
    client_addr     text,
    request_id      text,
    viewed_at       timestamptz NOT NULL
);

CREATE INDEX patient_access_log_patient ON patient_access_log (patient_id, viewed_at);
