-- A transcript (30 turns is about 3 kB of JSON) is over TOAST's threshold, so every new one is
-- compressed as it is written, inside intake's transaction. lz4 compresses several times
-- faster than the default pglz at a similar size (issue 18: pglz_compress was the largest
-- single function in a profile of the intake). Rows already stored keep pglz: both read back
-- alike. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE transcripts ALTER COLUMN segments SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server; transcripts stay pglz-compressed';
END $$;
