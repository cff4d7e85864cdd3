"""Profile a model: parameters, MACs per second of speech (and without the CNN), real-time factor.

Usage::

    python -m s3prl_plugins.bin.profile star_hubert hubert_base           # presets (random weights)
    python -m s3prl_plugins.bin.profile exp/star/model.pt --wav-list data/test/wav.scp
    python -m s3prl_plugins.bin.profile star_hubert --format json
    python -m s3prl_plugins.bin.profile STaRHuBERT.ckpt --model-config STaRHuBERT.yaml   # the published pair
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.eval.probe.profile import durations_from_wav_list, format_table, profile_model, resolve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="preset name, checkpoint path / HF folder, or s3prl hub entry")
    parser.add_argument("--wav-list", help="audio files (one per line, or a Kaldi wav.scp) to count MACs over")
    parser.add_argument("--model-config", help="the published .yaml of a STaRHuBERT Lightning .ckpt given as a model")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--rtf-seconds", type=float, default=10.0, help="utterance length timed for the RTF")
    parser.add_argument("--rtf-repeats", type=int, default=5)
    parser.add_argument("--no-gpu", action="store_true", help="skip GPU timing even when CUDA is present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        durations = durations_from_wav_list(args.wav_list) if args.wav_list else None
    except (ValueError, OSError) as e:  # a missing list, an unreadable file in it (named, with its line)
        print(f"error: {e}", file=sys.stderr)
        return 2
    profiles = []
    for name in args.models:
        try:
            model = resolve(name, args.model_config)
        except Exception as e:  # noqa: BLE001 - CLI: one line, non-zero exit
            print(f"error: {e}", file=sys.stderr)
            return 2
        profiles.append(
            profile_model(
                model,
                name,
                durations,
                rtf_seconds=args.rtf_seconds,
                rtf_repeats=args.rtf_repeats,
                gpu=False if args.no_gpu else None,
            )
        )
    if args.format == "json":
        out = [p.to_dict() for p in profiles]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        print(format_table(profiles))
        if durations is None:
            print(f"(MACs over {profiles[0].num_utterances} utterances, {profiles[0].seconds:.2f} s, 1-20 s each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
