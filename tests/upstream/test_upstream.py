"""s3prl / ESPnet integration: automatic hub registration, the expert contract, S3PRLUpstream, S3prlFrontend."""

import os
import subprocess
import sys

import pytest
import torch

from s3prl_plugins.models import build_model, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.loading import OfflineError, load_pretrained
from s3prl_plugins.models.ssl_model import InputError

ENTRIES = [
    "star_hubert_local",
    "star_hubert_url",
    "star_hubert",
    "star_hubert_l",
    "star_hubert_s",
    "star_hubert_xs",
    "distilhubert_cif_local",
    "melhubert_local",
    "melhubert_pruned_local",
]


def _tiny_star():
    return star_hubert_config(
        embed_dim=32,
        num_layers=3,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )


@pytest.fixture(scope="module")
def star_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("star") / "student.pt")
    save_checkpoint(path, build_model(_tiny_star()))
    return path


def _mel_ckpt(folder, stack_frames):
    path = str(folder / f"melhubert_{stack_frames}.pt")
    cfg = melhubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        stack_frames=stack_frames,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        num_clusters=16,
    )
    save_checkpoint(path, build_model(cfg))
    return path


@pytest.fixture(scope="module")
def mel_ckpt(tmp_path_factory):
    return _mel_ckpt(tmp_path_factory.mktemp("mel"), 2)


def _fresh_python(code, **env):
    """Run code in a new interpreter that has NOT imported s3prl_plugins itself."""
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd="/", timeout=300)


def test_registration_is_automatic_in_a_fresh_interpreter(star_ckpt):
    code = (
        "import sys\n"
        "assert 's3prl_plugins.upstream' not in sys.modules\n"
        "import s3prl.hub as h\n"
        f"e = h.star_hubert_local(ckpt={star_ckpt!r})\n"
        "import torch\n"
        "out = e([torch.randn(16000), torch.randn(8000)])\n"
        "print(len(out['hidden_states']), tuple(out['hidden_states'][0].shape), "
        "sorted(n for n in h.options() if 'star' in n or 'melhubert' in n or 'cif' in n))\n"
    )
    r = _fresh_python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("4 (2, 49, 32)")
    for name in ENTRIES:
        assert name in last


def test_autoload_adds_no_start_up_cost():
    """A program that never touches s3prl imports neither torch nor s3prl because of us, and our
    start-up hook's own import time is a couple of milliseconds."""
    r = _fresh_python(
        "import sys; print(sorted(m for m in ('torch', 's3prl', 's3prl_plugins.upstream', 's3prl_plugins.models') "
        "if m in sys.modules))"
    )
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, cwd="/")
    ours = [line for line in r.stderr.splitlines() if "s3prl_plugins" in line]
    assert ours, "the start-up hook did not run (is s3prl_plugins-autoload.pth installed?)"
    cumulative_us = [int(line.split("|")[1]) for line in ours if line.split("|")[2].strip().startswith("s3prl_plugins")]
    assert max(cumulative_us) < 20_000, ours  # < 20 ms even on a slow CI machine (measured ~2 ms)


def test_autoload_can_be_switched_off():
    r = _fresh_python("import s3prl.hub as h; print(hasattr(h, 'star_hubert_local'))", S3PRL_PLUGINS_NO_AUTOLOAD="1")
    assert r.returncode == 0 and r.stdout.strip().endswith("False"), r.stderr[-1000:]


def test_importing_s3prl_hub_offline_prints_no_nltk_download_errors(tmp_path):
    """g2p_en (s3prl.hub -> ESPnet's phoneme tokenizer) downloads nltk data at import; offline that printed 8
    lines of errors in every process importing s3prl.hub. Now one log line, and nltk.download is itself after."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "import nltk\n"
        "real = nltk.download\n"
        "import s3prl.hub\n"
        "print('restored', nltk.download is real)\n"
        "try:\n"
        "    nltk.data.find('corpora/cmudict.zip'); print('nltk data present')\n"
        "except LookupError:\n"
        "    pass\n"
    )
    refused = "http://127.0.0.1:9"  # nothing listens there: every download fails at once
    r = _fresh_python(code, https_proxy=refused, HTTPS_PROXY=refused, http_proxy=refused, NLTK_DATA=str(tmp_path))
    assert r.returncode == 0 and "restored True" in r.stdout, r.stderr[-2000:]
    assert "[nltk_data]" not in r.stderr + r.stdout, r.stderr[-2000:]
    assert "nltk data present" in r.stdout or "nltk data not downloaded (" in r.stdout, r.stdout[-2000:]


def test_register_is_idempotent():
    import s3prl.hub as hub

    import s3prl_plugins

    s3prl_plugins.register()
    s3prl_plugins.register()
    from s3prl_plugins.upstream.hub import ENTRIES as ours

    for name, fn in ours.items():
        assert getattr(hub, name) is fn


def test_s3prl_upstream_and_featurizer(star_ckpt):
    from s3prl.nn import Featurizer, S3PRLUpstream

    up = S3PRLUpstream("star_hubert_local", path_or_url=star_ckpt).eval()
    assert up.num_layers == 4 and up.downsample_rates == [320] * 4
    wavs = torch.randn(2, 16000)
    wavs_len = torch.tensor([16000, 9000])
    with torch.no_grad():
        hs, lens = up(wavs, wavs_len)
        feats, feat_lens = Featurizer(up)(hs, lens)
    assert len(hs) == 4 and hs[0].shape[-1] == 32
    assert lens[0].tolist() == [50, 29]
    assert feats.shape[:2] == (2, 50)


@pytest.mark.parametrize("stack, rate, frames", [(1, 160, [100, 75]), (2, 320, [50, 38])], ids=["10ms", "20ms"])
def test_melhubert_local_through_s3prl_upstream(tmp_path, stack, rate, frames):
    """s3prl expects ceil(samples / stride) frames; the filterbank's edge frames are within its tolerance."""
    from s3prl.nn import S3PRLUpstream

    up = S3PRLUpstream("melhubert_local", path_or_url=_mel_ckpt(tmp_path, stack)).eval()
    assert up.downsample_rates == [rate] * 3
    with torch.no_grad():
        hs, lens = up(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert hs[-1].shape == (2, frames[0], 32) and lens[-1].tolist() == frames


def test_every_entry_builds_and_runs(star_ckpt, mel_ckpt):
    import s3prl.hub as hub

    from s3prl_plugins.models.checkpoint import load_checkpoint

    wav = torch.randn(8000) * 0.1
    for name, ckpt in [("distilhubert_cif_local", star_ckpt), ("melhubert_pruned_local", mel_ckpt)]:
        out = getattr(hub, name)(ckpt=ckpt).eval()([wav])
        model = load_checkpoint(ckpt)[0]
        with torch.no_grad():
            ref = model(wav[None]).hidden_states
        assert len(out["hidden_states"]) == model.config.num_layers + 1 == len(ref)
        for got, want in zip(out["hidden_states"], ref):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)  # every layer, the model's own states


def test_url_entry_offline_message(monkeypatch):
    import s3prl.hub as hub
    import s3prl.util.download as dl

    def offline(*a, **k):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(dl, "_urls_to_filepaths", offline)
    with pytest.raises(OfflineError, match="_local entry"):
        hub.star_hubert_url(ckpt="https://example.invalid/student.pt")


def test_url_entry_with_a_local_path_or_a_failed_download_leaves_nothing_in_the_cache(star_ckpt, tmp_path, monkeypatch):
    import s3prl.hub as hub
    import s3prl.util.download as dl

    monkeypatch.setattr(dl, "_download_dir", tmp_path / "cache")
    out = hub.star_hubert_url(ckpt=star_ckpt)([torch.randn(8000)])  # a local file: used as it is
    assert len(out["hidden_states"]) >= 3
    with pytest.raises(OfflineError, match="not a URL, and no such file"):
        hub.star_hubert_url(ckpt=str(tmp_path / "gone.pt"))
    monkeypatch.setenv("S3PRL_PLUGINS_OFFLINE", "0")

    def refused(*a, **k):
        raise ConnectionRefusedError(111, "refused (test)")

    monkeypatch.setattr(dl, "_download_url_to_file", refused)
    monkeypatch.setattr(dl, "_download_url_to_file_requests", refused)
    with pytest.raises(OfflineError, match="_local entry"):
        hub.star_hubert_url(ckpt="https://example.invalid/student.pt")
    left = list((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else []
    assert not [p for p in left if p.name.endswith(".lock")], left


def test_star_hubert_offline_names_the_published_checkpoint():
    """Offline (the test default), the published entry names the Google Drive id and the local entry."""
    import s3prl.hub as hub

    with pytest.raises(OfflineError, match="1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr") as e:
        hub.star_hubert()
    assert "star_hubert_local" in str(e.value)


def test_wrong_family_checkpoint_refused(mel_ckpt):
    import s3prl.hub as hub

    with pytest.raises(ValueError, match="not a 'star_hubert' model"):
        hub.star_hubert_local(ckpt=mel_ckpt)


@pytest.mark.parametrize(
    "wavs, match",
    [
        ([torch.randn(2, 16000)], "mono"),
        ([torch.zeros(0)], "empty"),
        ([torch.randn(100)], "fewer than"),
        ([torch.tensor([0.0, float("nan")] * 4000)], "NaN"),
    ],
    ids=["stereo", "empty", "too_short", "nan"],
)
def test_expert_bad_audio(star_ckpt, wavs, match):
    import s3prl.hub as hub

    expert = hub.star_hubert_local(ckpt=star_ckpt)
    with pytest.raises(InputError, match=match):
        expert(wavs)


def test_expert_model_config_num_layers(star_ckpt, tmp_path):
    import s3prl.hub as hub

    cfg = tmp_path / "expert.yaml"
    cfg.write_text("num_layers: 2\n")
    out = hub.star_hubert_local(ckpt=star_ckpt, model_config=str(cfg))([torch.randn(8000)])
    assert len(out["hidden_states"]) == 3
    cfg.write_text("layers: 2\n")
    with pytest.raises(ValueError, match="unknown expert options"):
        hub.star_hubert_local(ckpt=star_ckpt, model_config=str(cfg))


def test_espnet_s3prl_frontend(star_ckpt):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    fe = S3prlFrontend(
        fs=16000,
        frontend_conf={"upstream": "star_hubert_local", "path_or_url": star_ckpt},
        multilayer_feature=True,
    ).eval()
    with torch.no_grad():
        feats, lens = fe(torch.randn(2, 16000), torch.tensor([16000, 11000]))
    assert feats.shape == (2, 50, 32) and lens.tolist() == [50, 35]
    assert fe.output_size() == 32


def test_hub_teacher_offline_message_and_cache(tmp_path, monkeypatch):
    """Hub teachers are fetched through s3prl's cache: offline they fail with the fix; a file already
    in the cache loads without the network."""
    import s3prl.util.download as dl
    from refs import s3prl_hubert_ckpt

    monkeypatch.setattr(dl, "_download_dir", tmp_path)
    with pytest.raises(OfflineError, match="pass the file instead"):
        load_pretrained("hubert_base")
    from s3prl_plugins.models.loading import HUB_CHECKPOINTS

    cached = dl._urls_to_filepaths(HUB_CHECKPOINTS["hubert_base"][0], download=False)
    torch.save(s3prl_hubert_ckpt(), cached)
    model = load_pretrained("hubert_base")
    assert model.config.embed_dim == 48


def test_int16_range_samples_passed_as_float_are_warned_about_with_the_fix(mel_ckpt, monkeypatch, caplog):
    import logging

    import s3prl.hub as hub

    from s3prl_plugins.upstream import expert

    monkeypatch.setattr(expert, "_warned_peak", False)
    model = hub.melhubert_local(ckpt=mel_ckpt).eval()
    wav = torch.randn(16000).clamp(-1, 1) * 0.5
    with caplog.at_level(logging.WARNING):
        with torch.no_grad():
            good = model([wav])["hidden_states"][0]
        assert "32768" not in caplog.text
        with torch.no_grad():
            bad = model([wav * 32768])["hidden_states"][0]
    assert "peaks at 16384" in caplog.text and "divide by 32768" in caplog.text, caplog.text
    assert not torch.allclose(good, bad)  # what the warning is about: the features move
    caplog.clear()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model([wav * 32768])
    assert "peaks" not in caplog.text  # once per process, not per batch


def test_a_waveform_that_requires_grad_is_checked_without_a_warning():
    """s3prl's upstream test passes inputs that require grad: the checks read them without torch's "converting a
    tensor with requires_grad=True to a scalar" warning (and leave the gradient path alone)."""
    import warnings

    from s3prl_plugins.upstream.expert import check_waveforms

    w = (torch.randn(800) * 0.1).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (out,) = check_waveforms([w], 400)
    assert out is w
