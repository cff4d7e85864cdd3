"""Export a model to a deployable file: ONNX (float32 or int8) or a Hugging Face ``transformers`` folder.

Usage::

    python -m s3prl_plugins.bin.export exp/star/model.pt --out star.onnx            # float32 ONNX
    python -m s3prl_plugins.bin.export exp/star/model.pt --out star.int8.onnx --int8 --calibration data/dev
    python -m s3prl_plugins.bin.export exp/star/model.pt --out star.int8.onnx --int8 matmul  # no audio needed
    python -m s3prl_plugins.bin.export exp/star/model.pt --out star_hf --format hf   # HubertModel folder

SOURCE is anything ``load_pretrained`` reads: our checkpoints (trained, pruned, KD, first-k, head-replaced,
CIF students), a published STaRHuBERT ``.ckpt`` (``--config`` its ``.yaml``), s3prl / fairseq / Hugging Face
checkpoints and the hub teacher names. The ONNX graph takes ``waveforms`` float32 (batch, samples) and
``lengths`` int64 (batch,) and returns ``hidden_states`` float32 (layers + 1, batch, frames, dim) and
``output_lengths`` int64 (batch,); it runs under onnxruntime alone, or through
``s3prl.hub.onnx_local(ckpt=FILE.onnx)``. Nothing is half-written: every file appears by an atomic rename.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

from s3prl_plugins.bin.common import sigterm_raises
from s3prl_plugins.data.audio import audio_sample
from s3prl_plugins.deploy.quantize import CALIBRATION_SECONDS, CALIBRATION_UTTERANCES, INT8_MODES, MIN_COSINE
from s3prl_plugins.models import count_parameters
from s3prl_plugins.models.loading import load_pretrained

logger = logging.getLogger(__name__)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint file, a Hugging Face folder or an s3prl hub teacher name")
    p.add_argument("--out", required=True, help="the .onnx file (or, with --format hf, the folder) to write")
    p.add_argument(
        "--format", choices=("onnx", "hf"), default="onnx", help="onnx (default) or hf (transformers HubertModel)"
    )
    p.add_argument(
        "--int8",
        nargs="?",
        const="auto",
        choices=INT8_MODES,
        metavar="MODE",
        help="int8 graph: matmul (dynamic int8 of the transformer's matrix multiplications), all (also the CNN's "
        "convolutions, static int8 calibrated on --calibration audio, any that costs accuracy kept float32) or "
        "auto (the default: all where --calibration is given and it measures faster here, else matmul)",
    )
    p.add_argument(
        "--calibration",
        metavar="DATA",
        help="with --int8 all/auto: 16 kHz calibration audio -- a Kaldi data dir (the recipe's dev set, e.g. "
        f"data/dev; its first {CALIBRATION_UTTERANCES} utterances), a folder of audio files or one file",
    )
    p.add_argument(
        "--min-cosine",
        type=float,
        help="with --int8 all/auto: the lowest per-layer cosine to float32 on the calibration audio that int8 "
        f"convolutions may cost (default {MIN_COSINE})",
    )
    p.add_argument(
        "--per-tensor", action="store_true", help="with --int8: one scale per weight matrix instead of per channel"
    )
    p.add_argument(
        "--output-rate",
        choices=("auto", "encoder", "frontend"),
        default="auto",
        help="subsampled models: auto (fixed subsampling at its own rate, CIF at the CNN's frame rate)",
    )
    p.add_argument("--config", help="the published .yaml of a STaRHuBERT Lightning .ckpt")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from s3prl_plugins.deploy.graph import check_onnx_out, remove_stale_work, work_folder
    from s3prl_plugins.deploy.graph_model import ExportError
    from s3prl_plugins.deploy.hf import check_hf_out, to_hf
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.deploy.quantize import quantize_int8

    # the C extensions an ONNX export uses, imported before anything is written: an import interrupted by Ctrl-C
    # can crash the interpreter (seen: SIGSEGV in `import onnx`), and no finally block runs after a crash
    if args.format == "onnx":
        import onnx  # noqa: F401

        if args.int8:
            import onnxruntime.quantization  # noqa: F401

    if args.format == "hf" and (args.int8 or args.per_tensor or args.calibration):
        print(
            "error: --int8 / --per-tensor / --calibration apply to ONNX; a transformers folder holds float32 weights",
            file=sys.stderr,
        )
        return 2
    if (args.per_tensor or args.calibration or args.min_cosine is not None) and not args.int8:
        print("error: --per-tensor, --calibration and --min-cosine only mean something with --int8", file=sys.stderr)
        return 2
    if args.min_cosine is not None and (args.int8 == "matmul" or not 0 < args.min_cosine <= 1):
        what = "in (0, 1]" if args.int8 != "matmul" else "used by --int8 all/auto (matmul quantises no convolution)"
        print(f"error: --min-cosine {args.min_cosine}: {what}", file=sys.stderr)
        return 2
    if os.path.exists(args.source) and os.path.abspath(args.out) == os.path.abspath(args.source):
        print("error: --out must not overwrite the source", file=sys.stderr)
        return 2
    with sigterm_raises():  # a killed export (SIGTERM) removes its work folder; SIGKILL's: the next export
        try:
            # --out refused before the model is loaded: a folder for ONNX, a folder of someone else's files for hf
            if args.format == "hf":
                check_hf_out(args.out)
            else:
                check_onnx_out(args.out)
            calibration = None
            if args.int8 == "all" and not args.calibration:
                raise ExportError(
                    "--int8 all quantises the CNN's convolutions with activation ranges measured on audio: give "
                    "--calibration DATA_DIR (the recipe's dev set, e.g. data/dev), or use --int8 matmul"
                )
            if args.calibration:  # read (and refused) before the model is loaded and anything is written
                calibration = audio_sample(args.calibration, CALIBRATION_UTTERANCES, CALIBRATION_SECONDS)
            model = load_pretrained(args.source, model_config=args.config)
            if args.format == "hf":
                to_hf(model, args.out, source=args.source)
                print(
                    f"wrote {args.out}: transformers HubertModel, {model.config.num_layers} layers, "
                    f"width {model.config.embed_dim}"
                )
                return 0
            if not args.int8:
                to_onnx(model, args.out, args.output_rate)
            else:
                work = work_folder(args.out)  # the float32 graph beside --out, never in the system's temporary folder
                try:
                    fp32 = os.path.join(work, "float32.onnx")
                    to_onnx(model, fp32, args.output_rate)
                    fp32_size = os.path.getsize(fp32)
                    report = quantize_int8(
                        fp32,
                        args.out,
                        per_channel=not args.per_tensor,
                        mode=args.int8,
                        calibration=calibration,
                        min_cosine=MIN_COSINE if args.min_cosine is None else args.min_cosine,
                    )
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                logger.info("float32 graph %.1f MB -> int8 %.1f MB", fp32_size / 1e6, os.path.getsize(args.out) / 1e6)
        except (ValueError, RuntimeError, OSError) as e:  # ExportError, CheckpointError, OfflineError, ...
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"interrupted: the export stopped, no partial file is left beside {args.out}", file=sys.stderr)
            return 130
        except SystemExit:  # SIGTERM (sigterm_raises)
            print(f"terminated: the export stopped, no partial file is left beside {args.out}", file=sys.stderr)
            raise
        finally:  # an interrupted export's work folders, wherever the signal came (even between mkdtemp and its try)
            remove_stale_work(os.path.dirname(os.path.abspath(args.out)), own=True)
    print(
        f"wrote {args.out}: {model.config.name or 'model'}, "
        f"{count_parameters(model, include_head=False):,} parameters, {os.path.getsize(args.out) / 1e6:.1f} MB"
        f"{_int8_summary(report, args.per_tensor) if args.int8 else ''}"
    )
    return 0


def _int8_summary(report, per_tensor: bool) -> str:
    what = "matmuls" if report.mode == "matmul" else f"matmuls and {len(report.int8_convs)} CNN convolutions"
    kept = f"; float32: {', '.join(report.float_convs)}" if report.float_convs else ""
    cos = f"; lowest layer cosine to float32 {report.cosine:.4f}" if report.cosine is not None else ""
    return f" (int8 {what}, {'per tensor' if per_tensor else 'per channel'}{kept}{cos})"


if __name__ == "__main__":
    sys.exit(main())
