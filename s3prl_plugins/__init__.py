"""s3prl-plugins: small, fast self-supervised speech models for s3prl and ESPnet."""

__version__ = "0.1.0"
