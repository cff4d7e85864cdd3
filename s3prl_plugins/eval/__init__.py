"""Evaluation in three rooms: ``superb/`` (glue to s3prl's runner, SUPERB scoring and submission, ESPnet ASR),
``probe/`` (the profiler and the probes) and ``report/`` (tables and plots)."""
