-- Postgres' 0019 picks the compression of stored transcripts; SQLite does not compress rows.
-- This keeps the two migration histories numbered alike.
SELECT 1;
