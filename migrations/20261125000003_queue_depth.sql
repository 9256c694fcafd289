-- Queue depth for metrics, cheap however many finished jobs the table keeps.
--
-- The depth index covers only unfinished and dead jobs, with every column the depth query reads,
-- so the query is an index-only scan that never touches Done/Cancelled rows. One replica (the
-- maintenance leader) runs it and writes the result to tierflow_samples; every process reads that
-- small table for its gauges, so the fleet does not multiply the cost by its replica count.

CREATE INDEX tierflow_jobs_depth_idx ON apalis.jobs (status, job_type, run_at)
    WHERE status IN ('Pending', 'Failed', 'Running', 'Dead');

CREATE TABLE tierflow_samples (
    metric      text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}',
    value       double precision NOT NULL,
    sampled_at  timestamptz NOT NULL,
    PRIMARY KEY (metric, labels)
);
