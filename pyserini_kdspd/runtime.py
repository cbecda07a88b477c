"""Runtime settings and length-sorted batching, one place for every encoding and training path.

Settings that change speed but not the model: precision, texts per forward pass,
torch threads, maximum length; and one that the stock CLIs cannot say either, the language
of the queries (``query_lang``: which side of a KD-SPD folder encodes them, see
:class:`pyserini_kdspd.encoders.KdspdQueryEncoder`). :func:`resolve` takes each from, in rising priority,

1. the model folder's config (``kdspd_config.json``, e.g. its ``max_length``),
2. the documented environment variables (for the stock Pyserini CLIs, which have no flags for them)::

       PYSERINI_KDSPD_PRECISION    auto | bf16 | fp32
       PYSERINI_KDSPD_BATCH_SIZE   texts per forward pass (default 64)
       PYSERINI_KDSPD_THREADS      torch threads (default 0: torch's own choice)
       PYSERINI_KDSPD_QUERY_LANG   a language code for every query (de, zh, ...), or the path of a
                                   topics TSV whose third column tags each query (qid<TAB>text<TAB>lang)

3. explicit arguments (API parameters and CLI flags; None means "not given").

``"auto"`` precision means bf16 autocast only where the hardware computes bf16 natively:
without it PyTorch emulates bf16 and autocast runs *slower* than fp32, so the
instructions are detected, not assumed. The teacher additionally confirms ``"auto"``
on fixed probe sentences (see :class:`~pyserini_kdspd.distill.teacher.Teacher`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

PRECISIONS = ("auto", "bf16", "fp32")
KERNEL_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
TRAINING_KERNEL_CACHE = 64
ENV = {"precision": "PYSERINI_KDSPD_PRECISION", "batch_size": "PYSERINI_KDSPD_BATCH_SIZE",
       "threads": "PYSERINI_KDSPD_THREADS", "query_lang": "PYSERINI_KDSPD_QUERY_LANG"}


@dataclass(frozen=True)
class RuntimeSettings:
    """Resolved settings (see :func:`resolve`); ``max_length`` None means the model's own, ``query_lang``
    None untagged queries (English: the teacher's query encoder)."""

    precision: str = "auto"
    batch_size: int = 64
    threads: int = 0
    max_length: int | None = None
    query_lang: str | None = None

    def precision_for(self, device: torch.device | str = "cpu") -> str:
        """The concrete ``"bf16"`` or ``"fp32"`` on ``device``."""
        return resolve_precision(self.precision, device)

    def apply_threads(self) -> None:
        """Set torch's intra-op threads when ``threads`` > 0 (a process-wide setting)."""
        if self.threads:
            torch.set_num_threads(self.threads)


def _check(name: str, value, source: str):
    """``value`` converted and validated for field ``name``; errors name the source and the fix."""
    def fail(expected: str):
        raise ValueError(f"{source}: {name}={value!r} is invalid; expected {expected}")

    if name == "precision":
        value = str(value).strip().lower()
        if value not in PRECISIONS:
            fail(" | ".join(PRECISIONS))
        return value
    if name == "query_lang":
        from .spd.languages import is_language_code, normalize_lang  # lazy: spd imports this module

        text = str(value).strip()
        if is_language_code(text):
            return normalize_lang(text)
        if not os.path.isfile(text):
            fail("a language code (de, zho_Hans, ...) or the path of an existing topics TSV whose third "
                 "column tags each query")
        return text
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, float) and value != number:
        fail("an integer")
    minimum = {"batch_size": 1, "threads": 0, "max_length": 2}[name]
    if number < minimum:
        fail(f"an integer >= {minimum}")
    return number


def resolve(folder_config: Mapping | None = None, **explicit) -> RuntimeSettings:
    """Settings from the folder config < environment variables (:data:`ENV`) < explicit arguments.

    ``folder_config`` is a model folder's config as a mapping (e.g. ``StudentConfig.to_dict()``);
    keys that are not settings are ignored. ``explicit`` values of None count as not given.
    """
    names = [f.name for f in dataclasses.fields(RuntimeSettings)]
    unknown = sorted(set(explicit) - set(names))
    if unknown:
        raise TypeError(f"resolve() got unknown setting(s) {unknown}; known: {names}")
    values = {}
    for name in names:
        env = ENV.get(name)
        if explicit.get(name) is not None:
            values[name] = _check(name, explicit[name], f"argument {name}")
        elif env and os.environ.get(env, "").strip():
            values[name] = _check(name, os.environ[env], f"environment variable {env} (unset it or fix it)")
        elif folder_config is not None and folder_config.get(name) is not None:
            values[name] = _check(name, folder_config[name], "the model folder's kdspd_config.json")
    return RuntimeSettings(**values)


# ------------------------------------------------------------------ precision
def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_info(flags: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")) -> dict:
    """The CPU's model name, cores, which of ``flags`` it has and whether bf16 is native: what to
    record beside figures that depend on the machine's speed."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    have = _cpuinfo_flags()
    return {"model": model, "cores": os.cpu_count(), "flags": [x for x in flags if x in have],
            "native_bf16": bf16_supported()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB) since it started its program.

    Linux's ``ru_maxrss`` is no such figure for a child: exec keeps the larger of its own and the spawner's
    high-water mark (a FAISS build started by a 790 MB benchmark reported 790 MB whatever it used), so the
    kernel's per-program ``VmHWM`` is read where there is one."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 2.0 ** 20)


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when this CPU has native bf16 matmuls (AVX-512 BF16 or AMX-BF16).

    A VM that hides the flags can still force bf16 with ``PYSERINI_KDSPD_PRECISION=bf16``.
    """
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:  # private torch API: fall back to the CPU flags
                pass
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """Map ``"auto" | "bf16" | "fp32"`` to the concrete ``"bf16"`` or ``"fp32"`` for ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cpu":
        return "bf16" if bf16_supported() else "fp32"
    return "fp32"


def autocast(precision: str = "auto", device: torch.device | str = "cpu"):
    """A context running matmuls in bf16 when ``precision`` resolves to bf16 on ``device``."""
    dev = torch.device(device)
    if resolve_precision(precision, dev) == "bf16" and dev.type in ("cpu", "cuda"):
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ batching
def bound_kernel_cache(capacity: int = TRAINING_KERNEL_CACHE) -> None:
    """Cap oneDNN's cache of compiled kernels (default 1024 entries, one per matmul shape).

    Training meets a new shape with every new padded width, and the cache then grows the
    process by gigabytes over a run (README: training notes, peak RSS); a smaller cache
    changes no result, only which kernels are recompiled. Takes effect only before the
    process's first oneDNN matmul; a value already in the environment wins.
    """
    os.environ.setdefault(KERNEL_CACHE_ENV, str(capacity))


def length_sorted_batches(lengths: Sequence[int], batch_size: int, exact: bool = False) -> Iterator[np.ndarray]:
    """Index arrays of up to ``batch_size`` items, longest first (ties in input order).

    Batches of similar length pad little; longest first makes the peak memory show up
    in the first batch, not after an hour. ``exact=True`` never mixes two lengths in a
    batch: without padding a bf16 vector does not depend on which other texts shared its
    batch (with padding it moves by up to ~1e-3), so cached teacher targets come out the
    same whatever order or company they were computed in.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if not exact:
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]
        return
    cuts = np.flatnonzero(np.diff(lengths[order])) + 1
    for group in np.split(order, cuts):
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


# ``exact`` batches hold this many rows, always: with AMX (Intel Xeon), oneDNN picks its bf16 kernel by the
# number of rows, so one text's vector moved by up to 3e-4 between a batch of 1 and a batch of 4 of the same
# length; with the shape fixed a row depends on nothing but its own text. Small enough that a training step's
# few texts per length cost little, large enough that a budget's precomputed targets run in real GEMMs.
EXACT_ROWS = 8
#: How exact batches are formed; part of every cache key and training setting that depends on it.
EXACT_BATCHES = f"{EXACT_ROWS} rows of one length each"


def encode_sorted(lengths: Sequence[int], encode_batch: Callable[[np.ndarray], np.ndarray], batch_size: int,
                  dim: int, progress: str | None = None, exact: bool = False) -> np.ndarray:
    """(n, dim) float32 rows in input order, computed by ``encode_batch(indices)`` on length-sorted batches.

    ``exact``: one length per batch (see :func:`length_sorted_batches`) and always :data:`EXACT_ROWS` rows
    (a short batch is filled with repeats of its last index, whose rows are dropped), so that a vector is
    the same whatever other texts, and how many, were encoded with it. ``progress``: a description for
    a tqdm bar over the batches (None: no bar).
    """
    out = np.zeros((len(lengths), dim), dtype=np.float32)
    batches = list(length_sorted_batches(lengths, EXACT_ROWS if exact else batch_size, exact))
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=progress, unit="batch")
    for idx in batches:
        if exact and len(idx) < EXACT_ROWS:
            out[idx] = encode_batch(np.concatenate([idx, np.repeat(idx[-1:], EXACT_ROWS - len(idx))]))[:len(idx)]
        else:
            out[idx] = encode_batch(idx)
    return out
