"""Compiled int8 graphs kept on disk, so only the first process on a machine waits for the compiler.

torch.compile rebuilds the int8 graph in every new process (about a minute on 2 cores). The
graph is instead exported once with dynamic batch and length (torch.export), compiled ahead of
time by Inductor into a package, and saved under `$SENTEMBED_HOME/compiled/`. The package holds
the int8 weights as constants, so a later process loads it (a tenth of a second) without building
any int8 weight itself.

The file name is a key over everything the compiled code depends on, computed from the float
model before anything int8 is built: torch's version, the CPU's capabilities, the code of the
graph, the build settings, the config and the float weights themselves. The zip's checksums are
read before each load: a damaged package is named in a warning and compiled again, never run.
Every upgrade of torch or sentembed makes new keys, so the directory is kept under
`MAX_COMPILED_BYTES`: after a compile, the packages least recently loaded go first.

    path = package_path(mpnet, torch.bfloat16, keep=())
    run = load_package(path) or compile_package(int8_model, path)   # run(input_ids, bias, index)
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import move_into_place
from ..model import config, int8_matmul, kernels, mpnet
from ..model.cpu import cpu, warn_once
from ..model.resolve import home
from ..model.settings import settings

log = logging.getLogger(__name__)

# Sequences of every length an MPNet takes, in batches of any size the encoder forms.
MAX_BATCH = 4096
# About 15 packages of a base-sized MPNet (136 MB each).
MAX_COMPILED_BYTES = 2 << 30


def compile_pays() -> bool:
    """Whether the int8 graph is compiled on this CPU: where there is VNNI and a C++ compiler.

    Without VNNI (AVX2-only CPUs) the compiled graph crawls (a batch of 64 STS-B sentences took
    43 s, oneDNN limited to AVX2), so int8 runs uncompiled there, and still slower than float32."""
    if not settings().compile:  # SENTEMBED_COMPILE=0
        return False
    if cpu().compiler is None:
        warn_once("quantize='int8' runs uncompiled, and slower: torch.compile needs a C++ compiler and none "
                  "was found (install g++ or set CXX)")
        return False
    if not cpu().vnni:
        warn_once(f"quantize='int8' on a CPU without VNNI ({cpu().describe()}): int8 products have no "
                  "dot-product instructions here and the graph runs uncompiled, slower than float32 "
                  "(about 0.4x with oneDNN limited to AVX2); dtype='float32' or backend='openvino' is faster")
        return False
    return True


def compiled_dir() -> Path:
    return home() / "compiled"


def graph_code() -> bytes:
    """The source of every module whose code becomes the graph (or picks its weights)."""
    from . import int8

    files = [Path(module.__file__) for module in (int8, mpnet, kernels, int8_matmul, config)] + [Path(__file__)]
    return b"".join(file.read_bytes() for file in files)


def cache_key(model: torch.nn.Module, act_dtype: torch.dtype, keep: tuple[str, ...]) -> str:
    """Changes whenever the compiled code could: torch, the CPU, the graph's code, the build
    settings, the config, the weights. Read from the float MPNet: nothing int8 is built yet.

    A full hash of the weights, not the file's size and date: an encoder changed in memory (or a
    file rewritten within the clock's resolution) must not run an old graph. sha256 reads about
    1 GB/s here, so this costs ~0.4 s for all-mpnet-base-v2's 438 MB."""
    h = hashlib.sha256()
    c = cpu()
    h.update(f"{torch.__version__}|{c.capability}|{c.bf16}|{c.vnni}|{c.amx}|{c.arch}|".encode())
    h.update(f"{act_dtype}|{sorted(keep)}|".encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    h.update(graph_code())
    for name, tensor in sorted(itertools.chain(model.named_parameters(), model.named_buffers()), key=lambda t: t[0]):
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:24]


def package_path(model: torch.nn.Module, act_dtype: torch.dtype, keep: tuple[str, ...]) -> Path:
    """Where the compiled int8 graph of the float MPNet `model` is kept, whether or not it is there yet."""
    return compiled_dir() / f"int8-{cache_key(model, act_dtype, keep)}.pt2"


def load_package(path: Path) -> Callable | None:
    """The graph saved at `path`, or None when there is none. A damaged file (truncated, bytes
    changed, not a package) is named in a warning and None is returned: it is compiled again."""
    if not path.is_file():
        return None
    try:
        # The loader does not read the zip's checksums; a changed byte in the weights would run.
        # Checking them costs ~0.06 s for a 136 MB package.
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"checksum mismatch in {bad}")
        run = _load(path)
    except Exception as err:  # any damage reads the same to the user: compile again over it
        warn_once(f"{path} does not load, damaged or foreign ({type(err).__name__}: {str(err)[:120]}); "
                  "compiling it again")
        return None
    try:
        os.utime(path)  # its last use, which pruning goes by
    except OSError:
        pass  # a read-only cache: used, never pruned from here
    return run


def _load(path: Path) -> Callable:
    """The package's runner, through torch's C++ loader: torch._inductor's Python wrapper
    (aoti_load_package) imports the whole compiler first, 1.5-2 s of a later start."""
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except (AttributeError, TypeError):  # a torch whose binding differs: its public loader
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path))

    def run(input_ids: torch.Tensor, bias: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return loader.boxed_run([input_ids, bias, index])[0]
    return run


def compile_package(model: torch.nn.Module, path: Path) -> Callable:
    """Compile the Int8MPNet `model` ahead of time, save it at `path` (atomically) and load it.
    The package takes every batch size up to MAX_BATCH and every length the model takes."""
    from torch._inductor import aoti_compile_and_package

    log.warning("compiling the int8 graph for this CPU (once; about a minute): it is saved in %s", path.parent)
    cfg = model.config
    length = cfg.max_position_embeddings - cfg.pad_token_id - 1
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    tokens = torch.export.Dim("length", min=2, max=length)
    real = torch.export.Dim("real_tokens", min=2, max=MAX_BATCH * length)
    # An example of sizes other than 0 and 1, which export would take as constants, and with
    # padding, so that no size is taken to equal another.
    input_ids = torch.full((2, 8), cfg.pad_token_id + 1, dtype=torch.long)
    bias = torch.zeros(2, cfg.num_attention_heads, 8, 8, dtype=model.dtype)
    index = torch.tensor([0, 1, 2, 3, 4, 8, 9, 10, 11])
    with torch.no_grad():
        program = torch.export.export(model, (input_ids, bias, index),
                                      dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 2: tokens, 3: tokens}, {0: real}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        aoti_compile_and_package(program, package_path=str(staged))
        move_into_place(staged, path)
    prune(path.parent, keep=path)
    return _load(path)


def prune(directory: Path, keep: Path, limit: int = MAX_COMPILED_BYTES) -> list[Path]:
    """Remove the least recently used packages until those left fit in `limit` bytes (`keep`
    always stays); returns the removed. Another process still running a removed package keeps
    its open file; one about to load it compiles it again."""
    packages = []
    for path in directory.glob("int8-*.pt2"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # removed meanwhile by another process
        packages.append((path != keep, -st.st_mtime, st.st_size, path))
    removed, total = [], 0
    for _, _, size, path in sorted(packages):
        total += size
        if total > limit and path != keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d compiled packages not used lately from %s", len(removed), directory)
    return removed
