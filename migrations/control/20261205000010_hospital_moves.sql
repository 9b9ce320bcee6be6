-- Hospitals being moved to another database server (`hms move-hospital`): one row per
-- move in progress, so a move interrupted at any step is resumed or aborted from where
-- it stood. The directory (tenants.db_server, tenants.database_name) names the source
-- until the move switches it; the row goes once the source database is dropped.
CREATE TABLE hospital_moves (
    code             text PRIMARY KEY,
    source_server    text NOT NULL,
    source_database  text NOT NULL,
    target_server    text NOT NULL REFERENCES database_servers (name),
    -- The copy's name on the target until the switch renames it to source_database.
    target_scratch   text NOT NULL,
    step             text NOT NULL
                     CHECK (step IN ('COPYING', 'COPIED', 'HELD', 'SWITCHED')),
    -- The target holds exactly the source's events of transactions below this id (in
    -- the source's numbering).
    copied_below     bigint,
    events_copied    bigint NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    held_at          timestamptz,
    switched_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
