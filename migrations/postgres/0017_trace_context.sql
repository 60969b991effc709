-- The W3C traceparent of the span that enqueued the job (NULL when telemetry is off or there
-- was no trace): every attempt's `job.attempt` span is a child of it, so a job's work appears
-- in the trace of the request or attempt that asked for it.
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
