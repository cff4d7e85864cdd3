"""Reference models built from small random configs (no downloads), for parity tests."""

from __future__ import annotations

import torch

SMALL_CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 2 + [(32, 2, 2)]"
SMALL_CONV_LIST = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)]


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (so LayerNorm/GroupNorm/bias are not identity/zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(noise + 1.0 if name.endswith("weight") and p.dim() == 1 else noise)
    return module


def s3prl_hubert_ckpt(
    embed_dim=48,
    layers=2,
    heads=4,
    ffn=96,
    conv=SMALL_CONV,
    extractor_mode="default",
    layer_norm_first=False,
    normalize=False,
    seed=0,
    conv_pos=16,
    conv_pos_groups=4,
):
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    model_cfg = dict(
        label_rate=50,
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        final_dim=16,
        conv_feature_layers=conv,
        extractor_mode=extractor_mode,
        layer_norm_first=layer_norm_first,
        conv_pos=conv_pos,
        conv_pos_groups=conv_pos_groups,
    )
    task_cfg = dict(normalize=normalize, label_rate=50)
    symbols = [[f"s{i}" for i in range(7)]]
    model = HubertModel(HubertConfig(**model_cfg), HubertPretrainingConfig(**task_cfg), symbols)
    randomize_(model, seed)
    return {
        "task_cfg": task_cfg,
        "model_cfg": model_cfg,
        "model_weight": model.state_dict(),
        "dictionaries_symbols": symbols,
    }


def wav_batch(lengths=(3200, 2500, 4000), seed=0):
    g = torch.Generator().manual_seed(seed)
    wavs = [torch.randn(n, generator=g) * 0.1 for n in lengths]
    return wavs


def s3prl_wav2vec2_ckpt(embed_dim=48, layers=2, heads=4, ffn=96, conv=SMALL_CONV, seed=0):
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

    model_cfg = dict(
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        final_dim=16,
        conv_feature_layers=conv,
        conv_pos=16,
        conv_pos_groups=4,
        latent_vars=8,
        latent_groups=2,
    )
    model = Wav2Vec2Model(Wav2Vec2Config(**model_cfg))
    randomize_(model, seed)
    return {"task_cfg": {"normalize": False}, "model_cfg": model_cfg, "model_weight": model.state_dict()}


def s3prl_wavlm_ckpt(embed_dim=48, layers=2, heads=4, ffn=96, conv=SMALL_CONV, seed=0):
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = dict(
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        conv_feature_layers=conv,
        conv_pos=16,
        conv_pos_groups=4,
        relative_position_embedding=True,
        gru_rel_pos=True,
        num_buckets=32,
        max_distance=64,
        normalize=False,
    )
    model = WavLM(WavLMConfig(cfg))
    randomize_(model, seed)
    return {"cfg": cfg, "model": model.state_dict()}


def s3prl_distiller_ckpt(
    embed_dim=48, layers=2, heads=4, ffn=96, conv=SMALL_CONV, seed=0, conv_pos=16, conv_pos_groups=4
):
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    cfg = dict(
        extractor_conv_feature_layers=conv,
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        conv_pos=conv_pos,
        conv_pos_groups=conv_pos_groups,
        final_dim=40,
        n_tasks=3,
        pred_layer_id=[4, 8, 12],
        out_layer_type="expand-last",
        task_emb_type="expand-last",
    )
    model = DistillerModel(DistillerConfig(cfg))
    randomize_(model, seed)
    return {"Config": {"distiller": cfg}, "Distiller": model.state_dict()}


def hf_model(kind="hubert", embed_dim=48, layers=2, heads=4, ffn=96, seed=0, **extra):
    import transformers

    common = dict(
        hidden_size=embed_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=[c for c, _, _ in SMALL_CONV_LIST],
        conv_kernel=[k for _, k, _ in SMALL_CONV_LIST],
        conv_stride=[s for _, _, s in SMALL_CONV_LIST],
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        **extra,
    )
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**common))
    elif kind == "wavlm":
        model = transformers.WavLMModel(transformers.WavLMConfig(num_buckets=32, max_bucket_distance=64, **common))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**common))
    randomize_(model, seed)
    return model.eval()
