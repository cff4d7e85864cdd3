"""``--format hf``: a folder that Hugging Face ``transformers`` loads with ``HubertModel.from_pretrained``.

transformers' HuBERT has one head count and one FFN width for every layer, a waveform CNN, a feature
projection and a positional convolution, and it derives the head size from the width (width / heads):
HuBERT, DistilHuBERT, STaRHuBERT, their first layers (first-k) and FFN units removed alike from every layer
fit. Removing heads does not, even the same number from every layer: the heads left are narrower together
than the width (10 heads x 36 != 432), which transformers cannot express. Per-layer head counts or FFN
widths, heads replaced by the identity or a convolution, sequence subsampling (CIF or fixed), the log-Mel
front-end, WavLM's relative position bias and a CNN without normalisation do not fit either; each is
refused with the reason. The folder holds ``config.json``, ``model.safetensors`` and
``preprocessor_config.json``: a ``Wav2Vec2FeatureExtractor`` that returns the attention mask -- so the
standard padded path, ``AutoFeatureExtractor(..., padding=True)`` then ``AutoModel``, masks the padding as
we do (transformers' default for group-norm HuBERTs is no mask, which leaves a padded utterance's states
~22-28 % off) -- and whose ``do_normalize`` is the model's waveform normalisation (with variance epsilon
1e-7 where fairseq's ``F.layer_norm`` uses 1e-5, a relative difference of ~1e-4 on quiet audio). The
mapping is explicit (our key -> transformers key, :data:`TO_HF`), the inverse of
:data:`s3prl_plugins.models.convert.keymap.HF_RULES`, and loaded strictly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Dict, List

import torch

from s3prl_plugins.deploy.graph import naming_a_full_disk, work_folder_in
from s3prl_plugins.deploy.graph_model import ExportError
from s3prl_plugins.models.convert.common import uniform_hubert_refusals
from s3prl_plugins.models.ssl_model import SSLModel

logger = logging.getLogger(__name__)

TO_HF: Dict[str, str] = {
    r"frontend\.conv_layers\.(\d+)\.conv\.(weight|bias)": r"feature_extractor.conv_layers.\1.conv.\2",
    r"frontend\.conv_layers\.(\d+)\.norm\.(weight|bias)": r"feature_extractor.conv_layers.\1.layer_norm.\2",
    r"feature_layer_norm\.(weight|bias)": r"feature_projection.layer_norm.\1",
    r"feature_projection\.(weight|bias)": r"feature_projection.projection.\1",
    r"encoder\.pos_conv\.conv\.bias": "encoder.pos_conv_embed.conv.bias",
    r"encoder\.pos_conv\.conv\.parametrizations\.weight\.original(0|1)": (
        r"encoder.pos_conv_embed.conv.parametrizations.weight.original\1"
    ),
    r"encoder\.layer_norm\.(weight|bias)": r"encoder.layer_norm.\1",
    r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)": r"encoder.layers.\1.attention.\2_proj.\3",
    r"encoder\.layers\.(\d+)\.attention_layer_norm\.(weight|bias)": r"encoder.layers.\1.layer_norm.\2",
    r"encoder\.layers\.(\d+)\.feed_forward\.fc1\.(weight|bias)": (
        r"encoder.layers.\1.feed_forward.intermediate_dense.\2"
    ),
    r"encoder\.layers\.(\d+)\.feed_forward\.fc2\.(weight|bias)": r"encoder.layers.\1.feed_forward.output_dense.\2",
    r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)": r"encoder.layers.\1.final_layer_norm.\2",
    r"mask_emb": "masked_spec_embed",
}


def hf_refusals(model: SSLModel) -> List[str]:
    """Why transformers' ``HubertModel`` cannot express ``model`` (empty: it can)."""
    c = model.config
    why = uniform_hubert_refusals(c, "transformers")
    if c.num_layers and len(set(c.ffn_dims)) == 1 and c.ffn_dims[0] == 0:
        why.append("FFNs pruned to width 0")
    if not c.pos_conv_kernel:
        why.append("no positional convolution (transformers' HuBERT always has one)")
    return why


def hf_config(model: SSLModel):
    """The ``transformers.HubertConfig`` of ``model`` (call :func:`hf_refusals` first)."""
    from transformers import HubertConfig

    c = model.config
    return HubertConfig(
        hidden_size=c.embed_dim,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads[0],
        intermediate_size=c.ffn_dims[0],
        hidden_act="gelu",
        feat_extract_norm={"group_norm": "group", "layer_norm": "layer"}[c.conv_norm],
        feat_extract_activation="gelu",
        conv_dim=[s[0] for s in c.conv_layers],
        conv_kernel=[s[1] for s in c.conv_layers],
        conv_stride=[s[2] for s in c.conv_layers],
        conv_bias=c.conv_bias,
        feat_proj_layer_norm=bool(c.feature_layer_norm),
        num_conv_pos_embeddings=c.pos_conv_kernel,
        num_conv_pos_embedding_groups=c.pos_conv_groups,
        do_stable_layer_norm=c.layer_norm_first,
        layer_norm_eps=1e-5,
        hidden_dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
        feat_proj_dropout=c.dropout,
        layerdrop=0.0,
    )


def hf_state(model: SSLModel) -> Dict[str, torch.Tensor]:
    """Our state dict under transformers' names; a model without a projection gets the identity (exact)."""
    out = {}
    for key, value in model.state_dict().items():
        for pattern, target in TO_HF.items():
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = value.detach().clone().contiguous()
                break
        else:
            raise ExportError(f"no transformers name for {key}; --format hf supports HuBERT-shaped models only")
    if model.feature_projection is None:
        dim = model.config.embed_dim
        out["feature_projection.projection.weight"] = torch.eye(dim)
        out["feature_projection.projection.bias"] = torch.zeros(dim)
    return out


MARKER = "s3prl_plugins_export.json"  # in every folder --format hf writes: the one kind of folder it replaces


def check_hf_out(out: str) -> None:
    """Refuse an ``out`` that :func:`to_hf` must not replace: a file, or a folder that holds anything but a previous
    export of ours (:data:`MARKER`). Nothing is written."""
    if not os.path.lexists(out):
        return
    if os.path.islink(out) or not os.path.isdir(out):
        raise ExportError(f"--format hf: {out} exists and is not a folder; choose another --out")
    found = sorted(os.listdir(out))
    ours = set()
    if MARKER in found:  # an earlier export: it lists what it wrote; anything added since (a model card) is not ours
        try:
            with open(os.path.join(out, MARKER), encoding="utf-8") as f:
                ours = set(json.load(f).get("files", [])) | {MARKER}
        except (OSError, ValueError, AttributeError):
            ours = set()
    foreign = [n for n in found if n not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(
            f"--format hf: {out} holds files this command did not write ({shown}); it replaces only an empty folder "
            f"or an earlier export of its own (listed in {MARKER}). Move them out or choose another --out; nothing "
            "was changed"
        )


def _share(folder: str) -> None:
    """The umask's modes for ``folder`` and its files (``mkdtemp`` makes 0700, some writers 0600)."""
    from s3prl_plugins.models.checkpoint import current_umask

    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.chmod(path, 0o666 & ~mask)


def to_hf(model: SSLModel, out: str, source: str = "") -> str:
    """Write ``model`` as a transformers ``HubertModel`` folder ``out``: a new folder, or one that holds an
    earlier export of ours (replaced); anything else is refused before anything is written.

    Raises:
        ExportError: the model's shape is not expressible (every reason listed), ``out`` holds files this
            function did not write, or ``out``'s folder is not writable.
    """
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    why = hf_refusals(model)
    if why:
        raise ExportError(
            "--format hf: transformers' HubertModel cannot express "
            + "; ".join(why)
            + ". Export to ONNX instead (the default format), which takes every model"
        )
    check_hf_out(out)
    parent = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ExportError(f"{out}: the folder {parent} does not exist or is not writable; choose another --out")
    hf = HubertModel(hf_config(model)).eval()
    state = hf_state(model)
    if "masked_spec_embed" in dict(hf.named_parameters()) and "masked_spec_embed" not in state:
        state["masked_spec_embed"] = hf.masked_spec_embed.detach().clone()
    # strict=False only to word the error: any missing or unexpected key raises ExportError just below
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(
            f"--format hf: transformers' HubertModel has keys {missing} we do not, and we have {unexpected} it does not"
        )
    work = work_folder_in(parent)
    try:
        tmp = os.path.join(work, "new")
        with naming_a_full_disk(out):
            hf.save_pretrained(tmp)
            Wav2Vec2FeatureExtractor(
                feature_size=1,
                sampling_rate=16000,
                padding_value=0.0,
                do_normalize=bool(model.config.normalize_waveform),
                return_attention_mask=True,  # AutoFeatureExtractor(padding=True) then gives AutoModel the mask
            ).save_pretrained(tmp)
            files = sorted(os.listdir(tmp))
            with open(os.path.join(tmp, MARKER), "w") as f:
                json.dump(
                    {"written_by": "s3prl_plugins.bin.export --format hf", "source": source, "files": files},
                    f,
                    indent=2,
                )
        _share(tmp)
        check_hf_out(out)  # again: something may have appeared there while the weights were written
        if os.path.isdir(out):  # empty, or our earlier export: out of the way first, removed once the new is in
            os.replace(out, os.path.join(work, "old"))
            try:
                os.replace(tmp, out)
            except BaseException:  # interrupted between the two renames: the earlier export goes back
                os.replace(os.path.join(work, "old"), out)
                raise
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "wrote %s (transformers HubertModel, %d layers, width %d)", out, model.config.num_layers, model.config.embed_dim
    )
    return out
