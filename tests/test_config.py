"""s3prl_plugins.config and the three training CLIs' configs: numbers as people write them, every key of
every CLI fuzzed with a wrong name, type and range (no traceback, the key named, nothing written)."""

import copy
import io
import os
from contextlib import redirect_stderr

import pytest
import torch
import yaml
from tiny_data import make_tiny_data, make_tiny_teacher, tiny_chain_config, tiny_distill_config, tiny_pretrain_config

from s3prl_plugins.bin import compress as compress_cli
from s3prl_plugins.bin import distill as distill_cli
from s3prl_plugins.bin import pretrain as pretrain_cli
from s3prl_plugins.config import ConfigError, apply_overrides, check_type, config_changes, load_config, parse_value
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.factories import melhubert_config
from s3prl_plugins.models.ssl_model import SSLModel


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-4", 1e-4),
        ("1E5", 1e5),
        ("-2.5e-3", -2.5e-3),
        (".5", 0.5),
        ("3", 3),
        ("1_000", 1000),
        ("abc", "abc"),
        ("true", True),
        ("null", None),
        ("'1e-4'", "1e-4"),
        ("[1e-4, 2]", [1e-4, 2]),
    ],
)
def test_numbers_are_read_the_way_people_write_them(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_exponents_are_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  lr: 1e-4\n  eps: 1.0e-8\n  name: '2e-3'\n")
    cfg = load_config(str(path))
    assert cfg["trainer"] == {"lr": 1e-4, "eps": 1e-8, "name": "2e-3"}
    cfg = apply_overrides(cfg, ["trainer.lr=5e-4", "trainer.max_steps=10", "data.train=data/x"])
    assert cfg["trainer"]["lr"] == 5e-4 and isinstance(cfg["trainer"]["lr"], float)
    assert cfg["trainer"]["max_steps"] == 10 and cfg["data"] == {"train": "data/x"}


def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(str(path))
    path.write_text("trainer: {lr: [\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(str(path))


def test_check_type_and_changes():
    from typing import List, Optional, Sequence, Union

    assert check_type(3, float, "k") == 3.0 and check_type(2.0, int, "k") == 2
    assert check_type([1, 2], Sequence[int], "k") == [1, 2]
    assert check_type(4, Union[int, List[int]], "k") == 4 and check_type(None, Optional[str], "k") is None
    for value, tp in ((True, int), ("abc", int), (2.5, int), ({"a": 1}, Sequence[int]), ([1, "x"], List[int])):
        with pytest.raises(ConfigError, match="^k"):
            check_type(value, tp, "k")
    assert config_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == {"a.c": (2, 3), "a.d": (None, 4)}


# ----------------------------------------------------------------- the CLIs, fuzzed


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    data, labels = make_tiny_data(str(root), n_utts=4)
    teacher = make_tiny_teacher(str(root / "teacher.pt"))
    torch.manual_seed(0)
    mel = str(root / "mel.pt")
    save_checkpoint(
        mel,
        SSLModel(
            melhubert_config(
                embed_dim=32,
                num_layers=2,
                num_heads=4,
                ffn_dim=48,
                stack_frames=2,
                pos_conv_kernel=8,
                pos_conv_groups=4,
                num_clusters=8,
            )
        ),
    )
    return root, data, labels, teacher, mel


def _configs(inputs, out):
    root, data, labels, teacher, mel = inputs
    pretrain = tiny_pretrain_config(str(out), data, labels)
    pretrain["trainer"]["exp_dir"] = str(out / "exp")
    distill = tiny_distill_config(str(out), data, teacher)
    # an objective's own section (its settings fuzzed like every other key) and the task's own loss keys
    distill["objectives"] = {"layer_wise": {"weight": 1.0, "normalize": "l2", "method": "auto"}, "intra_layer": 1.0}
    distill["loss"] = {"max_mismatch": 2}
    distill["student"]["init_from_teacher"] = {"frontend": True, "layers": False}
    measure = {
        "diagonality": 4,
        "rtf_seconds": 0.5,
        "rtf_repeats": 1,
        "probe": {"train": data, "test": data, "max_steps": 5},
    }
    steps = [
        {"method": "heads", "score": "l1", "remove": 1, "updates": 1, "trainer": {"lr": 1e-4}},
        {
            "method": "weight",
            "densities": [0.5],
            "trigger": {"type": "plateau", "decay": 0.9, "window": 2, "tolerance": 0.1, "max_updates": 3},
        },
        {"method": "kd", "layers": 1, "temperature": 2.0, "updates": 1},
    ]
    compress = tiny_chain_config(mel, data, labels, out / "exp", steps, measure)
    return {
        "pretrain": (pretrain_cli, pretrain),
        "distill": (distill_cli, distill),
        "compress": (compress_cli, compress),
    }


def _leaves(d, path=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            yield from _leaves(v, path + (i,))
    else:
        yield path, d


def _parent(cfg, path):
    for p in path[:-1]:
        cfg = cfg[p]
    return cfg


def _cases(config):
    """(description, broken config, the key the message must name) for every leaf: a misspelt name, a
    value of the wrong type and, for numbers, one out of range (-1: no setting of these CLIs takes it)."""
    for path, value in _leaves(config):
        if path[-1] == "exp_dir":
            continue
        where = ".".join(map(str, path))
        bad = copy.deepcopy(config)
        _parent(bad, path)[f"{path[-1]}x"] = _parent(bad, path).pop(path[-1])
        yield f"{where} misspelt", bad, f"{path[-1]}x"
        bad = copy.deepcopy(config)
        _parent(bad, path)[path[-1]] = [1, 2] if isinstance(value, str) else {"bogus": 1}
        yield f"{where} of a wrong type", bad, str(path[-1])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = copy.deepcopy(config)
            _parent(bad, path)[path[-1]] = -1
            yield f"{where} = -1", bad, str(path[-1])
    bad = dict(copy.deepcopy(config), extras={"a": 1})
    yield "an unknown section", bad, "extras"


@pytest.mark.parametrize("cli", ["pretrain", "distill", "compress"])
def test_every_key_of_every_cli_is_checked_before_anything_is_written(inputs, tmp_path, cli):
    module, config = _configs(inputs, tmp_path)[cli]
    path = tmp_path / "config.yaml"
    n = 0
    for what, bad, key in _cases(config):
        path.write_text(yaml.safe_dump(bad))
        err = io.StringIO()
        with redirect_stderr(err):
            rc = module.main(["--config", str(path)])
        message = err.getvalue()
        assert rc == 2, (what, message)
        assert "Traceback" not in message and key in message, (what, message)
        assert not os.path.exists(tmp_path / "exp"), (what, message)
        n += 1
    assert n > 40, n  # the fuzz reached every section


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=abc", "trainer.max_steps: expected an integer, got 'abc'"),
        ("trainer.save_every=0", "trainer.save_every: must be >= 1, not 0"),
        ("trainer.max_step=5", "trainer.max_step: unknown key (did you mean 'max_steps'?)"),
        ("data.batch_second=5", "data.batch_second: unknown key (did you mean 'batch_seconds'?)"),
        ("trainer.lr=abc", "trainer.lr: expected a number"),
    ],
)
def test_overrides_are_checked_like_the_file(inputs, tmp_path, override, message):
    _, config = _configs(inputs, tmp_path)["pretrain"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    err = io.StringIO()
    with redirect_stderr(err):
        assert pretrain_cli.main(["--config", str(path), "--set", override]) == 2
    assert message in err.getvalue()
    assert not os.path.exists(tmp_path / "exp")


def test_distill_section_typos_are_refused_with_the_nearest_name(inputs, tmp_path):
    _, config = _configs(inputs, tmp_path)["distill"]
    path = tmp_path / "config.yaml"
    teacher = config["teacher"]["source"]
    for bad, message in (
        ({"teacher": {"sorce": teacher}}, "teacher.sorce: unknown key (did you mean 'source'?)"),
        ({"student": {"presett": "star_hubert"}}, "student.presett: unknown key (did you mean 'preset'?)"),
        ({"student": {"preset": "star_hubbert"}}, "did you mean 'star_hubert'?"),
        ({"objectives": {"layer_wise": -1.0}}, "objectives.layer_wise"),
    ):
        path.write_text(yaml.safe_dump({**config, **bad}))
        err = io.StringIO()
        with redirect_stderr(err):
            assert distill_cli.main(["--config", str(path)]) == 2
        assert message in err.getvalue(), err.getvalue()
