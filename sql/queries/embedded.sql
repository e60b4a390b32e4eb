-- Creating trackctl's database on a new embedded server (trackctl/embedded.py).

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %s;

-- name: create_database
-- The database is named by embedded.DATABASE; CREATE DATABASE takes no parameters.
CREATE DATABASE trackctl;
