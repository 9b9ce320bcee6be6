-- Spare tenant databases: copies of the migrated template made ahead of time, so that
-- onboarding a hospital renames one (`ALTER DATABASE … RENAME`, in the same transaction
-- that deletes its row here and records the hospital's MIGRATED step) instead of waiting
-- for `CREATE DATABASE`. A row is written only once its database is complete and nobody
-- is connected to it; a database named like a spare (`<prefix>_spare_…`) without a row is
-- the leftover of an interrupted refill and is dropped by the next one.
CREATE TABLE spare_databases (
    database_name     text PRIMARY KEY,
    -- The template's migration version when the copy was made; only spares at the
    -- binary's newest migration are used, older ones are dropped.
    migration_version bigint NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
