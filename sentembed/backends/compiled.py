"""Compiled int8 graphs kept on disk, so only the first process on a machine waits for the compiler.

torch.compile rebuilds the int8 graph in every new process (about a minute on 2 cores). The
graph is instead exported once with dynamic batch and length (torch.export), compiled ahead of
time by Inductor into a package, and saved under `$SENTEMBED_HOME/compiled/`; later processes
load it in well under a second. The file name is a key over everything the compiled code
depends on: torch's version, the CPU's capabilities, the code of the int8 graph, the weights.

    run = load_or_compile(int8_model)          # a callable like the model: run(input_ids, bias)
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..io import move_into_place
from ..model import mpnet
from ..model.cpu import cpu, warn_once
from ..model.resolve import home

log = logging.getLogger(__name__)

# Sequences of every length an MPNet takes, in batches of any size the encoder forms.
MAX_BATCH = 4096


def compiled_dir() -> Path:
    return home() / "compiled"


def cache_key(model: torch.nn.Module) -> str:
    """Changes whenever the compiled code could: torch, the CPU, the graph's code, the weights."""
    from . import int8  # the graph's code, read as text

    h = hashlib.sha256()
    c = cpu()
    h.update(f"{torch.__version__}|{c.capability}|{c.bf16}|{c.vnni}|{c.amx}|{c.arch}".encode())
    for module in (int8, mpnet):
        h.update(inspect.getsource(module).encode())
    for name, tensor in sorted(itertools.chain(model.named_parameters(), model.named_buffers()), key=lambda t: t[0]):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def load_or_compile(model: torch.nn.Module) -> Callable:
    """The compiled `model(input_ids, bias)` of an Int8MPNet: loaded from disk, else compiled
    once and saved. It takes every batch size up to MAX_BATCH and every length the model takes."""
    path = compiled_dir() / f"int8-{cache_key(model)}.pt2"
    if path.is_file():
        try:
            return torch._inductor.aoti_load_package(str(path))
        except Exception as err:  # a damaged or foreign file: compile again over it
            warn_once(f"{path} does not load ({type(err).__name__}: {str(err)[:120]}); compiling again")
    log.warning("compiling the int8 graph for this CPU (once; about a minute): it is saved in %s", path.parent)
    length = model.config.max_position_embeddings - model.config.pad_token_id - 1
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    tokens = torch.export.Dim("length", min=2, max=length)
    # An example of sizes other than 0 and 1, which export would take as constants.
    input_ids = torch.full((2, 8), model.config.pad_token_id + 1, dtype=torch.long)
    bias = model.attention_bias(torch.ones_like(input_ids))
    with torch.no_grad():
        program = torch.export.export(model, (input_ids, bias),
                                      dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 2: tokens, 3: tokens}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        torch._inductor.aoti_compile_and_package(program, package_path=str(staged))
        move_into_place(staged, path)
    return torch._inductor.aoti_load_package(str(path))
