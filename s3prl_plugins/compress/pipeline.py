"""The compression chain: any sequence of Lin et al. (2024)'s methods on any model of the zoo, each step
followed by training with the model's own objective, each iteration measured -- from one YAML config.
The methods are the classes of :mod:`s3prl_plugins.compress.steps` (a new one is one class there);
what is measured beyond the chain's own statistics is passed in (:class:`Measures`).

Config::

    model: exp/melhubert_tiny/model.pt          # our checkpoint to compress (or any load_pretrained source)
    objective:                                  # the model's own loss while it recovers
      type: masked_prediction                   # {mask_prob, mask_length, unmasked_weight}: needs data.*_labels
      # type: distillation                      # {teacher: CKPT, objectives: {...}, loss: {...}} (students)
    data: {train, valid, train_labels, valid_labels, max_seconds, batch_seconds, batch_size}
    trainer: {lr: 1.0e-5, schedule: constant, ...}   # TrainerConfig fields of every recovery run
    steps:                                      # in order; each runs one or more iterations
      - {method: weight, densities: [0.8, 0.7] | schedule: paper, stop: 0.3,
         trigger: {type: fixed, updates: 200} | {type: plateau, decay: 0.9998, window: 15000,
                   tolerance: 0.001, max_updates: 100000}}
      - {method: heads, score: gradient | l1, remove: 2 (per iteration: over all layers for
         gradient, per layer for l1), iterations: 2, score_fraction: 0.25, updates: 200}
      - {method: ffn, remove: 128 (per layer), iterations: 5 | until: 512, updates: 200}
      - {method: kd, layers: 6, temperature: 1.0, updates: 2000}   # student of the current model
      - {method: first_k, layers: 2}                                # no training
      - {method: replace_heads, kind: identity | conv, remove: 2, iterations: 3, kernel: 21,
         utterances: 100, updates: 200}
      - {method: dp, target_macs: 0.3, units: [conv, heads, ffn, layers], updates: 2000, warmup: 700,
         reg_lr: 0.02, objectives: {layer_wise: 1, intra_layer: 1}, final_updates: 1000}   # distil + prune
      - {method: train, iterations: 3, updates: 200}   # the control: the same updates, nothing removed
    measure: {diagonality: 100, rtf_seconds: 10, probe: {train, valid, test, max_steps, max_train_utts},
              sid: {train, test}}
    exp_dir: exp/compress/NAME
    base_dir: exp/compress/base    # optional: where the uncompressed model's row is measured (shared by chains)
    updates_cap: 2                 # optional: at most this many updates per recovery (quick checks)

Every iteration writes ``exp_dir/<NN>_<method><k>/`` with ``model.pt`` (our format: loads with
``melhubert_pruned_local`` / ``star_hubert_local``; its config holds the new shape and the weight
density), ``metrics.json`` and the recovery run's checkpoints and TensorBoard logs; ``trajectory.csv``
and ``trajectory.json`` gather every row (density, loss, params, MACs per second dense and nonzero,
RTF, probe PER, diagonality). An iteration whose ``metrics.json`` exists is not run again, so a killed
chain resumes where it stopped (inside an iteration the trainer resumes from its checkpoint).

After ``kd`` the chain's objective becomes distillation from the model before it (``cluster_kl``), the
student's own objective from then on (§VI-B: KD to 6 layers, then head and FFN pruning).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import random
from typing import Any, Dict, List, Optional, Protocol, Tuple

import torch

from s3prl_plugins.compress import diagonal
from s3prl_plugins.compress.recovery import RECOVERY_OBJECTIVES, RecoveryTask
from s3prl_plugins.compress.steps import STEPS, StepContext, check_step
from s3prl_plugins.compress.structured import count_heads
from s3prl_plugins.compress.weight import masks_from_model, model_density, per_layer_density
from s3prl_plugins.config import (
    ConfigError,
    check_keys,
    check_mapping,
    check_range,
    check_section,
    check_type,
    nearest,
)
from s3prl_plugins.data.dataset import (
    AudioDataset,
    BucketBatchSampler,
    batch_loader,
    collate,
    read_labels,
    split_dataset,
)
from s3prl_plugins.models.checkpoint import load_checkpoint, save_checkpoint
from s3prl_plugins.models.ssl_model import SSLModel, count_parameters
from s3prl_plugins.train.lock import experiment_lock
from s3prl_plugins.train.trainer import TrainerConfig

logger = logging.getLogger(__name__)

# trajectory.csv: the measurements of every row, then the columns the steps add
CSV_FIELDS = (
    "iteration",
    "name",
    "method",
    "layers",
    "heads",
    "attention_heads",
    "ffn_units",
    "weight_density",
    "loss_pruned",
    "loss",
    "params",
    "params_nonzero",
    "macs_per_second",
    "macs_nonzero_per_second",
    "rtf_cpu",
    "per",
    "sid_accuracy",
    "diagonality",
    "updates",
) + tuple(c for s in STEPS.values() for c in s.columns)


# The settings every recovery run starts from (a config's ``trainer`` and a step's ``trainer`` go over them).
RECOVERY_TRAINER = {"lr": 1e-5, "schedule": "constant", "log_every": 20, "save_every": 100, "valid_every": 10**9}
DATA_KEYS = {
    "train": str,
    "valid": Optional[str],
    "train_labels": Optional[str],
    "valid_labels": Optional[str],
    "max_seconds": Optional[float],
    "batch_seconds": float,
    "batch_size": int,
}
DATA_RANGES = {"max_seconds": {"gt": 0}, "batch_seconds": {"gt": 0}, "batch_size": {"min": 1}}
# measure: key -> (type, range); probe / sid: the data dirs of the probes
MEASURE_KEYS = {
    "diagonality": (int, {"min": 0}),
    "rtf_seconds": (float, {"gt": 0}),
    "rtf_repeats": (int, {"min": 1}),
    "probe": (Optional[Dict[str, Any]], {}),
    "sid": (Optional[Dict[str, Any]], {}),
}
PROBE_KEYS = {
    "train": (str, {}),
    "test": (str, {}),
    "valid": (Optional[str], {}),
    "max_steps": (int, {"min": 1}),
    "max_train_utts": (int, {"min": 0}),
}
SID_KEYS = {"train": (str, {}), "test": (str, {})}


def check_config(config: Dict[str, Any]) -> None:
    """Refuse a config that cannot run before anything is written: unknown keys with the nearest valid
    name, wrong types and ranges with the key."""
    config = check_mapping(config, "config")
    known = {"model", "objective", "data", "steps", "exp_dir", "trainer", "measure", "base_dir", "updates_cap"}
    check_keys(config, known, "")
    for key in ("model", "objective", "data", "steps", "exp_dir"):
        if key not in config:
            raise ConfigError(f"compression config has no '{key}'")
    check_type(config["model"], str, "model")
    check_type(config["exp_dir"], str, "exp_dir")
    if config.get("updates_cap") is not None and check_type(config["updates_cap"], int, "updates_cap") < 1:
        raise ConfigError(f"updates_cap: must be >= 1, not {config['updates_cap']}")
    data = check_mapping(config["data"], "data")
    check_keys(data, DATA_KEYS, "data")
    for k, tp in DATA_KEYS.items():
        if k in data:
            check_range(check_type(data[k], tp, f"data.{k}"), DATA_RANGES.get(k, {}), f"data.{k}")
    if "train" not in data:
        raise ConfigError("data.train: missing (the Kaldi data dir every recovery trains on)")
    measure = check_section(config.get("measure"), MEASURE_KEYS, "measure")
    if measure.get("probe"):
        check_section(measure["probe"], PROBE_KEYS, "measure.probe", ("train", "test"))
    if measure.get("sid"):
        check_section(measure["sid"], SID_KEYS, "measure.sid", ("train", "test"))
    objective = check_mapping(config["objective"], "objective")
    every = set().union(*(r.keys() for r in RECOVERY_OBJECTIVES.values()))
    check_keys(objective, every, "objective")  # a misspelt key first, by name
    kind = objective.get("type")
    if not isinstance(kind, str) or kind not in RECOVERY_OBJECTIVES:
        raise ConfigError(
            f"objective.type: must be one of {', '.join(RECOVERY_OBJECTIVES)}, not {kind!r}"
            f"{nearest(str(kind), RECOVERY_OBJECTIVES)}"
        )
    check_keys(objective, RECOVERY_OBJECTIVES[kind].keys(), "objective")
    RECOVERY_OBJECTIVES[kind].check(objective)
    TrainerConfig.from_dict({**RECOVERY_TRAINER, **check_mapping(config.get("trainer"), "trainer")})
    steps = config["steps"]
    if not isinstance(steps, list):
        raise ConfigError(f"steps: expected a list of steps, got {type(steps).__name__}")
    trainer = check_mapping(config.get("trainer"), "trainer")
    for i, step in enumerate(steps):
        check_step(
            step,
            f"steps[{i}]",
            lambda section, where: TrainerConfig.from_dict({**RECOVERY_TRAINER, **trainer, **section}, where),
        )


class Measures(Protocol):
    """What a chain measures of each saved model beyond its own statistics, passed in by the caller
    (:class:`s3prl_plugins.eval.probe.chain_measures.ProfileAndProbes`: MACs, RTF, probes)."""

    def profile(self, model: SSLModel, name: str) -> Dict[str, Any]:
        """Row fields of the model itself (``params_nonzero``, ``macs_per_second``, ``rtf_cpu``, ...)."""

    def probes(self, checkpoint: str, out_dir: str) -> Dict[str, Any]:
        """Row fields of the saved checkpoint's probes (``per``, ``sid_accuracy``), written under ``out_dir``."""


class Chain:
    """Runs a compression config (see the module docstring); ``measures``: see :class:`Measures` (None:
    the chain's own statistics only -- loss, shape, densities, diagonality)."""

    def __init__(self, config: Dict[str, Any], measures: Optional[Measures] = None):
        check_config(config)
        self.measures = measures
        self.config = config
        self.exp_dir = str(config["exp_dir"])
        self.data = dict(config["data"])
        self.objective = dict(config["objective"])
        self.measure = dict(config.get("measure") or {})
        self.rows: List[Dict[str, Any]] = []
        self._labels: Dict[str, Any] = {}
        self._teachers: Dict[str, SSLModel] = {}

    # ------------------------------------------------------------ the objective
    def _teacher(self, path: str) -> SSLModel:
        if path not in self._teachers:
            self._teachers[path] = load_source(path, keep_head=True)
        return self._teachers[path]

    def build_task(self, model: SSLModel, objective: Optional[Dict[str, Any]] = None) -> torch.nn.Module:
        """The model's own training objective as a trainer task."""
        obj = objective or self.objective
        return RECOVERY_OBJECTIVES[obj["type"]].build(model, obj, self._teacher)

    def dataset(self, split: str, model: SSLModel, objective: Dict[str, Any]) -> Optional[AudioDataset]:
        impl = RECOVERY_OBJECTIVES[objective["type"]]
        labels = None
        if impl.needs_labels and self.data.get(split):
            key = f"{split}_labels"
            if not self.data.get(key):
                raise ValueError(f"objective {impl.name} needs data.{key} (the k-means codes)")
            if key not in self._labels:
                self._labels[key] = read_labels(self.data[key])
            labels = self._labels[key]
        min_samples = max(model.min_samples, impl.min_samples(objective, self._teacher))
        return split_dataset(self.data, split, labels, frame_stride=model.downsample_rate, min_samples=min_samples)

    def batches(self, ds: AudioDataset, fraction: float = 1.0, seed: int = 0):
        """Batches of a random ``fraction`` of ``ds`` (scores, diagonality)."""
        idx = list(range(len(ds)))
        random.Random(seed).shuffle(idx)
        idx = sorted(idx[: max(1, int(round(fraction * len(idx))))])
        durations = [ds.duration(i) for i in idx]
        sampler = BucketBatchSampler(
            durations,
            self.data.get("batch_seconds", 60.0),
            shuffle=False,
            max_batch_size=int(self.data.get("batch_size", 1000)),
        )
        for b in sampler:
            items = [ds[idx[j]] for j in b]
            batch = collate([it for it in items if it is not None])
            batch.pop("skipped", None)
            yield batch

    # ------------------------------------------------------------- recovery
    def recover(
        self,
        model: SSLModel,
        out_dir: str,
        updates: int,
        objective: Dict[str, Any],
        step: Dict[str, Any],
        masks=None,
        plateau=None,
        wrap=None,
    ) -> Tuple[SSLModel, Dict[str, float], int]:
        """Train ``model`` for ``updates`` updates (or until ``plateau``) with ``objective``; returns the
        model, the last validation statistics and the updates run. ``wrap(task, model)`` builds the trainer's
        task around the objective (default: :class:`RecoveryTask`, with ``masks`` and ``plateau``; a step that
        trains something of its own, e.g. ``dp``'s gates, passes its own)."""
        from s3prl_plugins.train.trainer import Trainer, TrainerConfig

        tcfg = {
            "max_steps": max(1, updates),
            **RECOVERY_TRAINER,
            **dict(self.config.get("trainer") or {}),
            **dict(step.get("trainer") or {}),
        }
        tcfg["exp_dir"] = out_dir
        cap = self.config.get("updates_cap")  # quick checks: at most this many updates per training run
        if cap is not None:
            updates = min(updates, int(cap))
        tcfg["max_steps"] = max(1, updates)
        tcfg["valid_every"] = min(int(tcfg["valid_every"]), tcfg["max_steps"])
        cfg = TrainerConfig(**tcfg)
        task = self.build_task(model, objective)
        wrapped = RecoveryTask(task, model, masks=masks, plateau=plateau) if wrap is None else wrap(task, model)
        train = self.dataset("train", model, objective)
        valid = self.dataset("valid", model, objective)
        trainer = Trainer(
            cfg,
            wrapped,
            batch_loader(train, self.data, shuffle=True, seed=cfg.seed, shard=False),  # the chain: one process
            batch_loader(valid, self.data, shuffle=False, shard=False) if valid else None,
        )
        last = trainer.train()
        model.eval()
        return model, last, trainer.step

    def valid_loss(self, model: SSLModel, objective: Dict[str, Any]) -> Optional[float]:
        """The objective's loss on ``data.valid`` (the same statistic the trainer logs)."""
        valid = self.dataset("valid", model, objective)
        if valid is None:
            return None
        task = self.build_task(model, objective).eval()
        total, count = 0.0, 0.0
        with torch.no_grad():
            for batch in self.batches(valid):
                _, logs = task(batch)
                s, n = logs["loss"]
                total, count = total + float(s), count + float(n)
        return total / max(count, 1e-9)

    # ------------------------------------------------------------- measures
    def measure_model(
        self, model: SSLModel, row: Dict[str, Any], out_dir: str, objective: Dict[str, Any]
    ) -> Dict[str, Any]:
        """The row of a saved model: its shape, the measures' profile, loss, densities, diagonality, probes."""
        c = model.config
        row.update(
            layers=c.num_layers,
            heads=count_heads(model),
            attention_heads=sum(c.num_heads),
            ffn_units=sum(c.ffn_dims),
            weight_density=round(model_density(model), 6) if c.num_layers else None,
            params=count_parameters(model, include_head=False),
        )
        if self.measures is not None:
            row.update(self.measures.profile(model, row["name"]))
        if row.get("loss") is None:
            row["loss"] = self.valid_loss(model, objective)
        row["per_layer_density"] = per_layer_density(model)
        n_diag = int(self.measure.get("diagonality", 0) or 0)
        if n_diag and sum(c.num_heads) and self.data.get("valid"):
            per_head = diagonal.head_diagonality(
                model, self.batches(self.plain_dataset("valid", model)), max_utterances=n_diag
            )
            row["diagonality"] = diagonal.mean_diagonality(per_head)
            row["diagonality_per_head"] = [t.tolist() for t in per_head]
        if self.measures is not None:
            row.update(self.measures.probes(os.path.join(out_dir, "model.pt"), out_dir))
        return row

    def plain_dataset(self, split: str, model: SSLModel) -> AudioDataset:
        """``split`` without labels or cropping (scores, diagonality)."""
        return AudioDataset(
            self.data[split], None, None, frame_stride=model.downsample_rate, min_samples=model.min_samples
        )

    # ------------------------------------------------------------------ run
    def _done(self, out_dir: str) -> Optional[Tuple[SSLModel, Dict[str, Any]]]:
        metrics, ckpt = os.path.join(out_dir, "metrics.json"), os.path.join(out_dir, "model.pt")
        if os.path.isfile(metrics) and os.path.isfile(ckpt):
            with open(metrics) as f:
                row = json.load(f)
            return load_checkpoint(ckpt)[0], row
        return None

    def _finish(
        self,
        model: SSLModel,
        out_dir: str,
        row: Dict[str, Any],
        objective: Dict[str, Any],
        history: List[Dict[str, Any]],
    ) -> None:
        os.makedirs(out_dir, exist_ok=True)
        density = model_density(model)
        if density < 1.0 - 1e-9:
            model.config.weight_density = round(density, 6)
        save_checkpoint(
            os.path.join(out_dir, "model.pt"),
            model.cpu().eval(),
            kind="compression",
            compression=history,
            objective=_plain_objective(objective),
        )
        row = self.measure_model(model, row, out_dir, objective)
        tmp = os.path.join(out_dir, "metrics.json.tmp")
        with open(tmp, "w") as f:
            json.dump(row, f, indent=2)
        os.replace(tmp, os.path.join(out_dir, "metrics.json"))
        self.rows.append(row)
        self.write_trajectory()
        logger.info(
            "%s: %s",
            row["name"],
            ", ".join(
                f"{k}={row[k]:.4g}"
                for k in ("loss", "params", "macs_per_second", "rtf_cpu", "per")
                if isinstance(row.get(k), (int, float))
            ),
        )

    def write_trajectory(self) -> None:
        os.makedirs(self.exp_dir, exist_ok=True)
        tmp = os.path.join(self.exp_dir, "trajectory.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS), extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: r.get(k) for k in CSV_FIELDS})
        os.replace(tmp, os.path.join(self.exp_dir, "trajectory.csv"))
        tmp = os.path.join(self.exp_dir, "trajectory.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.rows, f, indent=1)
        os.replace(tmp, os.path.join(self.exp_dir, "trajectory.json"))

    def run(self) -> List[Dict[str, Any]]:
        torch.manual_seed(int((self.config.get("trainer") or {}).get("seed", 0)))
        model = load_source(str(self.config["model"]), keep_head=RECOVERY_OBJECTIVES[self.objective["type"]].keeps_head)
        objective = dict(self.objective)
        history: List[Dict[str, Any]] = []
        it = 0
        # the uncompressed model's row; ``base_dir`` lets several chains of one model share its measurement
        base_dir = str(self.config.get("base_dir") or os.path.join(self.exp_dir, "00_base"))
        done = self._done(base_dir)
        source = str(self.config["model"])
        source = os.path.abspath(source) if os.path.exists(source) else source  # a file, or a hub name
        if done and done[1].get("source", source) != source:
            raise ConfigError(
                f"base_dir {base_dir} holds the measurement of {done[1]['source']}, not of this chain's model "
                f"{source}: give this chain a base_dir of its own"
            )
        if done:
            self.rows.append(done[1])
            self.write_trajectory()
        else:
            row = {"iteration": 0, "name": "00_base", "method": "none", "updates": 0, "source": source}
            self._finish(model, base_dir, row, objective, history)
            model = load_checkpoint(os.path.join(base_dir, "model.pt"))[0]
        for s, step in enumerate(self.config["steps"]):
            method = step["method"]
            for k, action in enumerate(STEPS[method].iterations(step, model)):
                it += 1
                name = f"{it:02d}_{method}{k + 1}"
                out_dir = os.path.join(self.exp_dir, name)
                done = self._done(out_dir)
                history.append({"method": method, **{key: v for key, v in action.items() if key != "apply"}})
                if done:
                    model, row = done
                    self.rows.append(row)
                    objective = (
                        row.get("objective_after", objective)
                        if isinstance(row.get("objective_after"), dict)
                        else objective
                    )
                    continue
                model, row, objective = self._apply(model, step, action, out_dir, objective, it, name)
                self._finish(model, out_dir, row, objective, history)
                model = load_checkpoint(os.path.join(out_dir, "model.pt"))[0]
        return self.rows

    def _apply(
        self,
        model: SSLModel,
        step: Dict[str, Any],
        action: Dict[str, Any],
        out_dir: str,
        objective: Dict[str, Any],
        it: int,
        name: str,
    ):
        """One iteration of a step (:mod:`s3prl_plugins.compress.steps`), then the recovery of its model."""
        row: Dict[str, Any] = {"iteration": it, "name": name, "method": step["method"]}
        if STEPS[step["method"]].density_of:  # the field whose ratio to the first row is this step's density
            row["density_of"] = STEPS[step["method"]].density_of
        done = STEPS[step["method"]].apply(StepContext(self, out_dir, it, name), model, step, action, objective, row)
        model, objective, masks = done.model, done.objective, done.masks
        if not done.train:
            row["updates"] = 0
            return model, row, objective
        if masks is None and model.config.weight_density is not None:
            # weight-pruned earlier in the chain: its zeros stay zeros while this step's recovery trains
            masks = masks_from_model(model)
        row["objective"] = objective["type"]
        if masks is not None:
            masks.apply(model)
        row["loss_pruned"] = self.valid_loss(model, objective)  # before recovery: how much there is to recover
        model, last, ran = self.recover(
            model, out_dir, done.updates, objective, step, masks=masks, plateau=done.plateau
        )
        row["loss"] = last.get("loss")
        row["updates"] = ran
        if masks is not None:
            row["per_matrix_density"] = masks.per_matrix_density()
        return model, row, objective


def load_source(source: str, keep_head: bool) -> SSLModel:
    """The model a chain starts from (or distils from): one of our checkpoints as it was saved, heads and all;
    any other :func:`~s3prl_plugins.models.loading.load_pretrained` source -- a hub name (``hubert_base``), a
    fairseq / s3prl checkpoint, a transformers folder -- converted, with its pre-training head when
    ``keep_head`` (masked prediction needs it; a distilled student has no use for it)."""
    if os.path.isfile(source):
        from s3prl_plugins.models.checkpoint import read_checkpoint
        from s3prl_plugins.models.convert import detect_format

        ckpt = read_checkpoint(source)
        if detect_format(ckpt) == "ours":
            return load_checkpoint(source, ckpt=ckpt)[0]
    from s3prl_plugins.models.loading import load_pretrained

    return load_pretrained(source, keep_head=keep_head)


def _plain_objective(objective: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(objective))


def run_compress(config: Dict[str, Any], measures: Optional[Measures] = None) -> List[Dict[str, Any]]:
    """Run a compression config; returns the trajectory rows (``measures``: see :class:`Measures`)."""
    chain = Chain(copy.deepcopy(config), measures)
    with experiment_lock(chain.exp_dir, "compression"):  # one writer per chain folder
        return chain.run()
