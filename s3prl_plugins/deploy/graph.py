"""ONNX graph utilities: check, metadata, atomic writes and work folders, the layers' weight matmuls
(int8 itself: :mod:`s3prl_plugins.deploy.quantize`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from typing import Dict, Iterator, List

from s3prl_plugins.deploy.graph_model import ExportError

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ("MatMul", "Gemm")


# protobuf holds at most 2 GiB per message: a graph whose weights come near it is written as ONNX external
# data (one file beside the graph), which onnx and onnxruntime read from the graph's folder
PROTOBUF_LIMIT = 2**31 - 2**26


def check_onnx_out(out: str) -> None:
    """Refuse an ``out`` that is a folder (before anything is loaded or written)."""
    if os.path.isdir(out):
        raise ExportError(
            f"{out} is a folder: --out names the .onnx file to write (e.g. {os.path.join(out, 'model.onnx')})"
        )


def _writable_folder(out: str) -> str:
    check_onnx_out(out)
    folder = os.path.dirname(os.path.abspath(out)) or "."
    if not os.path.isdir(folder):
        raise ExportError(f"{out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"{out}: the folder {folder} is not writable; choose another --out")
    return folder


WORK_PREFIX = ".tmp-export-"


def disk_full_error(out: str) -> ExportError:
    """What a full disk (or quota) while writing ``out`` or its work files is reported as: the folder and its
    free space, instead of the writer's own words about a temporary name."""
    folder = os.path.dirname(os.path.abspath(out)) or "."
    return ExportError(
        f"no space left on {folder} while writing {os.path.basename(out)} "
        f"({shutil.disk_usage(folder).free / 2**20:.1f} MiB free); nothing was written: free space and export again"
    )


@contextlib.contextmanager
def naming_a_full_disk(out: str) -> Iterator[None]:
    """:func:`disk_full_error` for a full disk within the block; other errors pass unchanged."""
    from s3prl_plugins.models.checkpoint import is_disk_full

    try:
        yield
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            raise
        raise disk_full_error(out) from e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_work(folder: str, own: bool = False) -> None:
    """Remove the work folders of exports on this host whose process has ended (killed: SIGKILL, an out-of-memory
    kill) -- ``.tmp-export-<host>-<pid>-*``; another host's or a live process's are left alone. ``own``: this
    process's instead (what an interrupted export calls on its way out, whatever line the signal reached)."""
    if not os.path.isdir(folder):
        return
    prefix = f"{WORK_PREFIX}{socket.gethostname()}-"
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() if own else not _alive(int(pid))):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            if not own:
                logger.info("removed %s (left by an export that was killed)", os.path.join(folder, name))


def work_folder(out: str) -> str:
    """A temporary folder beside the file ``out`` (checked writable) for a graph and its external data: remove it
    after (:func:`work_folder_in`)."""
    return work_folder_in(_writable_folder(out))


def work_folder_in(folder: str) -> str:
    """A temporary folder in ``folder``, named after this host and pid, so that one left by a killed export is
    removed by the next (:func:`remove_stale_work`)."""
    remove_stale_work(folder)
    return tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=folder)


@contextlib.contextmanager
def temp_files_in(folder: str) -> Iterator[None]:
    """Route ``tempfile``'s default folder (what onnxruntime's quantiser uses for its ``ort.quant.*``
    copies) into ``folder`` for the block, so that everything an export writes lies in its work folder."""
    before = tempfile.tempdir
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = before


def weight_bytes(proto) -> int:
    return sum(t.ByteSize() for t in proto.graph.initializer)


def save_graph(proto, out: str) -> List[str]:
    """Check ``proto`` and write it to ``out`` atomically; returns the files written. Weights near protobuf's
    2 GiB limit go to ``out + ".data"`` beside it (ONNX external data); a smaller graph is one file (and a
    stale ``.data`` beside it is removed)."""
    import onnx

    folder, name = _writable_folder(out), os.path.basename(out)
    work = work_folder(out)
    try:
        graph = os.path.join(work, name)
        with naming_a_full_disk(out):
            if weight_bytes(proto) >= PROTOBUF_LIMIT:
                onnx.save_model(
                    proto, graph, save_as_external_data=True, all_tensors_to_one_file=True, location=name + ".data"
                )
            else:
                onnx.save_model(proto, graph)
        check(graph)
        written = []
        for f in sorted(os.listdir(work), key=lambda f: f == name):  # the weights first, the graph last
            os.replace(os.path.join(work, f), os.path.join(folder, f))
            written.append(os.path.join(folder, f))
        if len(written) == 1 and os.path.exists(out + ".data"):
            os.remove(out + ".data")
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check(proto) -> None:
    """``onnx.checker`` with full shape inference (of a graph or its path: one with external data is checked
    from its file); :class:`ExportError` on failure."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the exported graph fails onnx.checker: {e}") from e


def set_metadata(proto, meta: Dict[str, str]) -> None:
    """Set (replace) ``metadata_props`` entries."""
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str) -> Dict[str, str]:
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def weight_matmuls(proto) -> List[str]:
    """Names of the MatMul / Gemm nodes of the transformer layers whose second input is a weight."""
    inits = {t.name for t in proto.graph.initializer}
    consts = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OPS and "/layers." in node.name and len(node.input) > 1:
            if node.input[1] in inits or node.input[1] in consts:
                names.append(node.name)
    return names
