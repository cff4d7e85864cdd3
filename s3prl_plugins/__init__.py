"""s3prl-plugins: small, fast self-supervised speech models for s3prl and ESPnet.

Importing this package is cheap (no torch); the library lives in its subpackages:
``s3prl_plugins.models`` (model zoo, checkpoints, converters), ``s3prl_plugins.nn`` (building blocks),
``s3prl_plugins.upstream`` (s3prl/ESPnet entries), ``s3prl_plugins.eval`` (profiler).
"""

__version__ = "0.1.0"


def register() -> None:
    """Register our upstream entries into ``s3prl.hub`` (done automatically when s3prl.hub is imported)."""
    from s3prl_plugins.upstream.hub import register as _register

    _register()
