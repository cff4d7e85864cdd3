"""Thin command-line entry points: ``python -m s3prl_plugins.bin.<verb>``."""
