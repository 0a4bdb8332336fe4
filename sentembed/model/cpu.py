"""What this CPU can run fast, detected once; every kernel choice in the package reads it here.

The same wheel of torch runs on CPUs that differ in what matters most here: native bf16
(AVX512_BF16 or AMX), int8 dot products (AVX512_VNNI, AVX_VNNI or AMX) and the vector width.
Without native bf16, oneDNN refuses bf16 primitives and bf16 products take a slow emulated
path; without VNNI, int8 products lose most of their advantage. So each capability is
probed, not assumed:

    >>> from sentembed.model.cpu import cpu
    >>> cpu().bf16, cpu().vnni
    (True, True)
    >>> print(cpu().describe())
    AMD EPYC 9R14 (x86_64): torch AVX512, bf16 native, int8 VNNI, AMX no, C++ compiler g++

`SENTEMBED_CPU=avx2` (or `default`) makes the package choose as it would on a CPU of that class,
whatever the hardware: bf16, VNNI and AMX read as absent. Tests use it to cover the fallback
paths on every machine; to make oneDNN itself behave like such a CPU, also set
`ONEDNN_MAX_CPU_ISA=AVX2` before torch starts.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from .settings import settings

T = TypeVar("T")
OVERRIDE_ENV = "SENTEMBED_CPU"
# Capability classes the override accepts, from the least to the most able.
CLASSES = ("default", "avx2", "avx512")


@dataclass(frozen=True)
class CPU:
    name: str           # the model name the OS reports
    arch: str           # x86_64, aarch64, arm64, ...
    capability: str     # the kernels torch dispatches to: AVX512, AVX2, DEFAULT, ...
    bf16: bool          # bf16 products run natively (oneDNN accepts them)
    vnni: bool          # int8 products have dot-product instructions
    amx: bool           # Advanced Matrix Extensions (bf16 and int8 tiles)
    compiler: str | None  # the C++ compiler torch.compile needs, if any
    override: str | None  # SENTEMBED_CPU, when it is set

    def describe(self) -> str:
        yes = lambda flag: "yes" if flag else "no"  # noqa: E731
        text = (f"{self.name} ({self.arch}): torch {self.capability}, bf16 {'native' if self.bf16 else 'emulated'}, "
                f"int8 {'VNNI' if self.vnni else 'without VNNI'}, AMX {yes(self.amx)}, "
                f"C++ compiler {self.compiler or 'none'}")
        return text + (f" [{OVERRIDE_ENV}={self.override}]" if self.override else "")

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def cpu() -> CPU:
    """The CPU this process runs on (detected on the first call)."""
    override = settings().cpu_class
    if override is not None and override not in CLASSES:
        raise ValueError(f"{OVERRIDE_ENV}={override!r} is not a CPU class; choices: {', '.join(CLASSES)}")
    import torch  # here, not at the top: `sentembed --help` reaches this module without a model

    flags = _cpuinfo_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    wide = capability.startswith("AVX512")
    bf16 = _probe_bf16()
    amx = "amx_tile" in flags and bf16
    vnni = _onednn_may_use_vnni() and (amx or ("avx512_vnni" in flags and wide) or "avx_vnni" in flags)
    if override is not None and CLASSES.index(override) < CLASSES.index("avx512"):
        bf16 = vnni = amx = False
        capability = override.upper()
    return CPU(name=_model_name(), arch=platform.machine(), capability=capability, bf16=bf16, vnni=vnni,
               amx=amx, compiler=_compiler(), override=override)


_CHOICES: list = []  # the cached functions of per_cpu, which reset() clears


def per_cpu(choose: Callable[[], T]) -> Callable[[], T]:
    """Cache a choice made from cpu() (a kernel, a scan that pays) until reset() detects the CPU
    again: a choice must not outlive the CPU it was made for.

    >>> @per_cpu
    ... def kernel() -> str: return "amx" if cpu().amx else "vnni"
    """
    cached = functools.cache(choose)
    _CHOICES.append(cached)
    return cached


def reset() -> None:
    """Detect the CPU again at the next cpu() call and forget the choices made from it (tests
    that change SENTEMBED_CPU within a process)."""
    cpu.cache_clear()
    for cached in _CHOICES:
        cached.cache_clear()


def warn_once(message: str) -> None:
    """One warning per distinct message and process: a fallback is news once, not every batch."""
    _warn_once(message)


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _probe_bf16() -> bool:
    """oneDNN's own answer: can it build a bf16 inner product here?"""
    import torch

    try:
        x = torch.zeros(2, 16, dtype=torch.bfloat16)
        torch.ops.mkldnn._linear_pointwise(x, torch.zeros(16, 16, dtype=torch.bfloat16), None, "none", [], "")
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) under which it runs no int8 dot-product instruction.
_CAPS_WITHOUT_VNNI = ("SSE41", "AVX", "AVX2", "AVX512_CORE")


def _onednn_may_use_vnni() -> bool:
    """False where oneDNN is told not to: an Intel CPU with AVX-VNNI capped at AVX2 has the flag
    in /proc/cpuinfo, yet its int8 products run without the instruction."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return cap not in _CAPS_WITHOUT_VNNI


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def choose_dtype(requested: str | None, device_type: str = "cpu") -> str:
    """The dtype a model runs in, for a requested one (None: float32).

    "auto" picks the fastest dtype whose vectors stay within cosine 0.9999 of float32: float16
    on a GPU, bfloat16 on a CPU with native bf16, float32 elsewhere. bfloat16 asked on a CPU
    without native bf16 runs float32, with one warning: there, bf16 products are emulated and
    several times slower than float32, and oneDNN's bf16 kernels refuse to run.

    >>> choose_dtype("auto")
    'bfloat16'
    """
    if requested is None:
        return "float32"
    if requested == "auto":
        if device_type == "cuda":
            return "float16"
        return "bfloat16" if device_type == "cpu" and cpu().bf16 else "float32"
    if requested == "bfloat16" and device_type == "cpu" and not cpu().bf16:
        warn_once(f"bfloat16 asked, but this CPU has no native bf16 (AVX512_BF16 or AMX; {cpu().describe()}): "
                  "bf16 products would run several times slower than float32 here, so the model runs in "
                  "float32 (the exact vectors). Pass dtype='auto' to choose by CPU without this warning.")
        return "float32"
    return requested
