-- Read models of the laboratory: the test catalogue, lab orders, their results (the
-- newest version of each, and every version), and specimens. Maintained by the `lab`
-- projector; rebuilt from the log at will. Sequence-free: every key comes from an event.

CREATE TABLE lab_tests (
    code               text PRIMARY KEY,
    -- LOINC or LOCAL.
    system             text NOT NULL,
    name               text NOT NULL,
    specimen_type      text NOT NULL,
    -- ANALYTE or PANEL.
    kind               text NOT NULL,
    -- NUMERIC, CODED or TEXT (analytes only).
    result_kind        text,
    unit               text,
    price_minor        bigint NOT NULL,
    currency           text NOT NULL,
    -- The whole definition as the events carry it (ranges, answers, members).
    definition         jsonb NOT NULL,
    catalogue_version  integer NOT NULL,
    retired            boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint NOT NULL
);

CREATE TABLE lab_orders (
    id              uuid PRIMARY KEY,
    patient_id      uuid NOT NULL,
    appointment_id  uuid,
    ordered_by      uuid NOT NULL,
    -- ROUTINE, URGENT or STAT; the rank sorts STAT first.
    priority        text NOT NULL,
    priority_rank   smallint NOT NULL,
    -- ORDERED, COLLECTED, IN_PROGRESS, VERIFIED or CANCELLED.
    status          text NOT NULL,
    clinical_note   text,
    -- The catalogue entries ordered, with version and price: [{code, version, name, price}].
    charges         jsonb NOT NULL,
    -- The specimen types the order needs, e.g. ["SERUM", "URINE"].
    specimen_types  jsonb NOT NULL,
    has_critical    boolean NOT NULL DEFAULT false,
    invoice_id      uuid,
    ordered_at      timestamptz NOT NULL,
    collected_at    timestamptz,
    -- The first verification (turnaround); an amendment does not move it.
    verified_at     timestamptz,
    cancelled_at    timestamptz,
    cancel_reason   text,
    updated_at      timestamptz NOT NULL,
    version         bigint NOT NULL
);

CREATE INDEX lab_orders_worklist ON lab_orders (status, priority_rank, ordered_at, id);
CREATE INDEX lab_orders_patient ON lab_orders (patient_id, ordered_at);
CREATE INDEX lab_orders_ordered ON lab_orders (ordered_at, id);
CREATE INDEX lab_orders_verified ON lab_orders (verified_at) WHERE verified_at IS NOT NULL;

-- One row per analyte of an order: its newest result.
CREATE TABLE lab_results (
    item_id            uuid PRIMARY KEY,
    order_id           uuid NOT NULL,
    patient_id         uuid NOT NULL,
    code               text NOT NULL,
    name               text NOT NULL,
    panel              text,
    catalogue_version  integer NOT NULL,
    specimen_type      text NOT NULL,
    result_kind        text NOT NULL,
    unit               text,
    -- PENDING, PRELIMINARY, FINAL or CANCELLED.
    status             text NOT NULL,
    result_version     integer NOT NULL DEFAULT 0,
    value              jsonb,
    value_text         text,
    -- NORMAL, LOW, HIGH, CRITICAL_LOW, CRITICAL_HIGH or ABNORMAL.
    flag               text,
    critical           boolean NOT NULL DEFAULT false,
    reference_range    jsonb,
    specimen_id        uuid,
    collected_at       timestamptz,
    entered_by         uuid,
    entered_at         timestamptz,
    verified_by        uuid,
    verified_at        timestamptz,
    amended            boolean NOT NULL DEFAULT false,
    ordered_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

CREATE INDEX lab_results_order ON lab_results (order_id);
CREATE INDEX lab_results_trend ON lab_results (patient_id, code, collected_at);
CREATE INDEX lab_results_critical ON lab_results (entered_at) WHERE critical;

-- Every version of every result: entries, re-entries and amendments, never overwritten.
CREATE TABLE lab_result_versions (
    id              uuid PRIMARY KEY,
    item_id         uuid NOT NULL,
    order_id        uuid NOT NULL,
    result_version  integer NOT NULL,
    value           jsonb NOT NULL,
    value_text      text NOT NULL,
    flag            text,
    entered_by      uuid NOT NULL,
    entered_at      timestamptz NOT NULL,
    amend_reason    text,
    verified_by     uuid,
    verified_at     timestamptz
);

CREATE INDEX lab_result_versions_item ON lab_result_versions (item_id, result_version);
CREATE INDEX lab_result_versions_order ON lab_result_versions (order_id);

CREATE TABLE lab_specimens (
    specimen_id       uuid PRIMARY KEY,
    order_id          uuid NOT NULL,
    label             text NOT NULL,
    specimen_type     text NOT NULL,
    -- COLLECTED, RECEIVED or REJECTED.
    status            text NOT NULL,
    collected_at      timestamptz NOT NULL,
    collected_by      uuid NOT NULL,
    received_at       timestamptz,
    received_by       uuid,
    rejected_at       timestamptz,
    rejection_reason  text,
    rejection_note    text
);

CREATE INDEX lab_specimens_order ON lab_specimens (order_id);
CREATE INDEX lab_specimens_label ON lab_specimens (label);
