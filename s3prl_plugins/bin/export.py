"""Export a model to a deployable file: ONNX (float32 or int8) or a Hugging Face ``transformers`` folder.

Usage::

    python -m s3prl_plugins.bin.export exp/star/model.pt --out star.onnx            # float32 ONNX
    python -m s3prl_plugins.bin.export exp/star/model.pt --out star.int8.onnx --int8 # int8 matmuls
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
        action="store_true",
        help="dynamic int8 of the transformer's matrix multiplications (CNN, "
        "positional convolution and front-end stay float32)",
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
    from s3prl_plugins.deploy.graph import check_onnx_out, quantize_int8, remove_stale_work, work_folder
    from s3prl_plugins.deploy.hf import check_hf_out, to_hf
    from s3prl_plugins.deploy.onnx import to_onnx

    # the C extensions an ONNX export uses, imported before anything is written: an import interrupted by Ctrl-C
    # can crash the interpreter (seen: SIGSEGV in `import onnx`), and no finally block runs after a crash
    if args.format == "onnx":
        import onnx  # noqa: F401

        if args.int8:
            import onnxruntime.quantization  # noqa: F401

    if args.format == "hf" and (args.int8 or args.per_tensor):
        print(
            "error: --int8 / --per-tensor apply to ONNX; a transformers folder holds float32 weights", file=sys.stderr
        )
        return 2
    if args.per_tensor and not args.int8:
        print("error: --per-tensor only means something with --int8", file=sys.stderr)
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
                    quantize_int8(fp32, args.out, per_channel=not args.per_tensor)
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
        f"{' (int8 matmuls, ' + ('per tensor' if args.per_tensor else 'per channel') + ')' if args.int8 else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
