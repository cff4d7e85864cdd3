"""Evaluation: ``plots`` (the shared plotting helpers) and three rooms above it -- ``superb/`` (glue to s3prl's
runner, SUPERB scoring and submission, ESPnet ASR) and ``probe/`` (the profiler and the probes), then ``report/``
(tables and plots of what the other two measured), which alone may import them."""
