"""What a compression chain measures of each model with eval/'s tools: parameters and MACs (dense and
nonzero) and the CPU real-time factor (:mod:`~s3prl_plugins.eval.probe.profile`), and the probes of
``measure.probe`` (phone error, :mod:`~s3prl_plugins.eval.probe.phone_ctc`) and ``measure.sid`` (speaker ID,
:mod:`~s3prl_plugins.eval.probe.utterance_probe`). Handed to :func:`s3prl_plugins.compress.pipeline.run_compress`
by its callers, so that compress/ imports nothing from eval/."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from s3prl_plugins.eval.probe.phone_ctc import run_probe
from s3prl_plugins.eval.probe.profile import profile_model
from s3prl_plugins.eval.probe.utterance_probe import run_utterance_probe
from s3prl_plugins.models.ssl_model import SSLModel


class ProfileAndProbes:
    """The chain's :class:`~s3prl_plugins.compress.pipeline.Measures` (see the module docstring).

    Args:
        settings: the config's ``measure`` section: ``rtf_seconds`` (10), ``rtf_repeats`` (3),
            ``probe: {train, test, valid, max_steps, max_train_utts}``, ``sid: {train, test}``.
    """

    def __init__(self, settings: Optional[Dict[str, Any]] = None):
        self.settings = dict(settings or {})

    def profile(self, model: SSLModel, name: str) -> Dict[str, Any]:
        prof = profile_model(
            model,
            name=name,
            rtf_seconds=float(self.settings.get("rtf_seconds", 10.0)),
            rtf_repeats=int(self.settings.get("rtf_repeats", 3)),
            gpu=False,
        )
        return {
            "params_nonzero": prof.params_nonzero,
            "macs_per_second": prof.macs_per_second,
            "macs_nonzero_per_second": prof.macs_nonzero_per_second,
            "rtf_cpu": prof.rtf_cpu,
        }

    def probes(self, checkpoint: str, out_dir: str) -> Dict[str, Any]:
        row: Dict[str, Any] = {}
        probe = self.settings.get("probe")
        if probe:
            res = run_probe(
                checkpoint,
                probe["train"],
                probe["test"],
                os.path.join(out_dir, "probe"),
                int(probe.get("max_steps", 2000)),
                probe.get("valid"),
                int(probe.get("max_train_utts", 0)),
            )
            row["per"] = res["per"]
        sid = self.settings.get("sid")
        if sid:
            res = run_utterance_probe(
                checkpoint, sid["train"], sid["test"], os.path.join(out_dir, "probe_sid"), "speaker", progress=False
            )
            row["sid_accuracy"] = res["accuracy"]
        return row
