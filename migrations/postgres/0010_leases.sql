-- Leases (fencing tokens). Every claim increments `lease`; an attempt's acknowledgement,
-- heartbeat, release and side-effect claims carry the lease it was given, and the database
-- refuses a stale one. A job rescued and claimed again can so never be finished by the
-- attempt it was taken from, whichever process that attempt runs in.
ALTER TABLE jobs ADD COLUMN lease BIGINT NOT NULL DEFAULT 0;

-- Which attempt holds an email's `sending` row: once that attempt's lease is gone (rescued,
-- crashed, timed out), the next attempt takes the row over at once instead of waiting.
ALTER TABLE email_log ADD COLUMN claim_job BIGINT;
ALTER TABLE email_log ADD COLUMN claim_lease BIGINT;
