-- Job progress: how far the running attempt says it got (0 to 100) and a short note
-- ("transcribing window 2 of 3"). Written by the attempt that holds the job's lease, so a
-- stale attempt cannot overwrite its successor's; cleared when a new attempt claims the job.
ALTER TABLE jobs ADD COLUMN progress SMALLINT
    CONSTRAINT jobs_progress_percent CHECK (progress BETWEEN 0 AND 100);
ALTER TABLE jobs ADD COLUMN progress_note TEXT;
