-- The migrations runner (trackctl/db.py).

-- name: bootstrap
CREATE SCHEMA IF NOT EXISTS sequencing;
CREATE TABLE IF NOT EXISTS sequencing.schema_migration (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_versions
SELECT array_agg(version) FROM sequencing.schema_migration;

-- name: applied
SELECT version, name, checksum, applied_at FROM sequencing.schema_migration ORDER BY version;

-- name: record
INSERT INTO sequencing.schema_migration (version, name, checksum) VALUES (%s, %s, %s);

-- name: lock
-- Serialises `db migrate` across processes and hosts (a session advisory lock).
SELECT pg_advisory_lock(%s);

-- name: unlock
SELECT pg_advisory_unlock(%s);
