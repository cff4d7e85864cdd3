"""Glue to other toolkits' SUPERB and ASR pipelines: s3prl's own runner (s3prl_runner), the task data and configs
(tasks), the scores (score), the submission bundle (submission), ASR-5k through ESPnet (espnet_asr)."""
