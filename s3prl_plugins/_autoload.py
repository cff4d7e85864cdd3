"""Registers our s3prl hub entries the moment ``s3prl.hub`` is imported, in any interpreter.

The installed ``s3prl_plugins-autoload.pth`` runs ``import s3prl_plugins._autoload`` at start-up. This
module imports nothing heavy (no torch, no s3prl): it only puts a finder on ``sys.meta_path`` that
waits for ``s3prl.hub``; when that module has executed, :func:`s3prl_plugins.upstream.hub.register`
adds our entries to it. Programs that never import s3prl pay for two tiny imports and nothing else.
Set ``S3PRL_PLUGINS_NO_AUTOLOAD=1`` to switch it off.
"""

import contextlib
import os
import sys

_TARGET = "s3prl.hub"


@contextlib.contextmanager
def _quiet_nltk_downloads():
    """s3prl.hub imports ESPnet's phoneme tokenizer, which imports g2p_en, which calls ``nltk.download`` at import
    for two data packages (used only for English grapheme-to-phoneme, which nothing here does); offline each
    call prints four lines of errors. While s3prl.hub is imported, those downloads run as before -- online they
    still download -- but what they print is gathered, and a failure becomes one log line."""
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("nltk") is None:
        yield
        return
    import io  # noqa: PLC0415
    import logging  # noqa: PLC0415

    try:
        import nltk  # noqa: PLC0415 - s3prl.hub imports it a moment later anyway
    except Exception:  # noqa: BLE001 - a broken nltk: s3prl.hub meets it as it would without us
        yield
        return

    real, failed = nltk.download, []

    def download(info_or_id=None, *args, **kwargs):
        if info_or_id is None or args or kwargs:  # anything but g2p_en's plain call: untouched
            return real(info_or_id, *args, **kwargs)
        ok = real(info_or_id, quiet=True, print_error_to=io.StringIO())
        if not ok:
            failed.append(str(info_or_id))
        return ok

    nltk.download = download
    try:
        yield
    finally:
        nltk.download = real
        if failed:
            logging.getLogger("s3prl_plugins").info(
                "nltk data not downloaded (%s; no network?): g2p_en, which s3prl.hub imports, needs it only for "
                "English grapheme-to-phoneme",
                ", ".join(failed),
            )


class _RegisteringLoader:  # duck-typed: importlib.abc would cost more imports at start-up
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _quiet_nltk_downloads():
            self._loader.exec_module(module)
        from s3prl_plugins.upstream.hub import register  # noqa: PLC0415 - only once s3prl.hub exists

        register(module)


class _HubFinder:
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def install():
    """Put the finder on ``sys.meta_path`` (idempotent); register at once if s3prl.hub is loaded."""
    if os.environ.get("S3PRL_PLUGINS_NO_AUTOLOAD", "0") not in ("", "0"):
        return
    if not any(isinstance(f, _HubFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _HubFinder())
    if _TARGET in sys.modules:
        from s3prl_plugins.upstream.hub import register  # noqa: PLC0415

        register(sys.modules[_TARGET])


install()
