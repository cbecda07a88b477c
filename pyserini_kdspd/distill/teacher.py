"""The frozen English teacher and its on-disk target cache.

KD-SPD (section 3.3) distils any English dense retriever: the student must map a
sentence in language k to the vector the teacher gives its English side. The
teacher encodes as Pyserini's ``AutoDocumentEncoder`` does (``PooledEncoder``, tested
equal to it; ANCE through Pyserini's ``AnceDocumentEncoder``), so the targets are what
the Pyserini query side later computes, while training never imports Pyserini (whose
import starts a JVM that training does not need).

Targets are cached per (teacher, English side of a file) as ``.npy`` memmaps with
a "done" mask, filled lazily as batches need them: KD-SPD and KD-Encoder runs on
the same bitext (and resumed runs) never recompute a target.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models import DEFAULT_TEACHER, model_settings, resolve_model
from ..paths import cache_dir as default_cache_dir
from ..runtime import EXACT_BATCHES, EXACT_ROWS, autocast, encode_sorted, resolve, resolve_precision

# Fixed English probe sentences: decide bf16-vs-fp32 the same way whatever data arrives first.
_PROBE = [
    "The cat sat on the mat.",
    "In 1935 Einstein was granted permanent residency in the United States and became a citizen in 1940.",
    "What is the boiling point of water at high altitude?",
    "Quarterly revenue rose by 12 percent, driven by strong demand for cloud services in Europe and Asia, "
    "while operating costs remained flat compared with the same period last year.",
    "Tom doesn't like cheese.",
    "The committee will meet again next week to discuss the proposed changes to the city's zoning rules.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please close the door.",
]


def _resolve(name: str) -> tuple[str, dict]:
    """Folder (or Hugging Face id) and Pyserini encoder settings of a teacher name."""
    return resolve_model(name), model_settings(name)


def _encoder_kind(path: str, name: str) -> str:
    """Pyserini's encoder family: "ance" by architecture or by an ``ance`` part of the name, else "auto"."""
    cfg = Path(path) / "config.json"
    archs = []
    if cfg.is_file():
        archs = json.loads(cfg.read_text()).get("architectures") or []
    if any("ance" in a.lower() for a in archs) or "ance" in name.lower().split("/")[-1].split("-"):
        return "ance"
    return "auto"


class PooledEncoder:
    """Pyserini's ``AutoDocumentEncoder.encode`` (the same tokenizer call, CLS or mean pooling, L2 norm
    and prefix) without importing Pyserini: that import starts a JVM, which training never needs.
    Tested equal to Pyserini's own class."""

    def __init__(self, path: str, device: str = "cpu", pooling: str = "cls", l2_norm: bool = False,
                 prefix: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(path).to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=True)
        self.device, self.pooling, self.l2_norm, self.prefix = device, pooling, l2_norm, prefix

    def encode(self, texts: Sequence[str], max_length: int = 256) -> torch.Tensor:
        if self.prefix is not None:
            texts = [f"{self.prefix} {t}" for t in texts]
        inputs = self.tokenizer(list(texts), max_length=max_length, truncation=True, padding="longest",
                                return_token_type_ids=False, return_tensors="pt").to(self.device)
        hidden = self.model(**inputs)[0]
        if self.pooling == "mean":
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        else:
            out = hidden[:, 0]
        return torch.nn.functional.normalize(out.float(), dim=-1) if self.l2_norm else out


class Teacher:
    """A frozen English dense retriever: Pyserini's pooling, normalisation and prefix for its model
    (``PooledEncoder``; ANCE through Pyserini's own class), without importing Pyserini otherwise.

    ``precision`` and ``batch_size`` left at None come from :func:`pyserini_kdspd.runtime.resolve`
    (environment, else "auto" and 64); an "auto" that the hardware turns into bf16 is kept
    only if bf16 keeps cosine > 0.9999 to fp32 on fixed probe sentences, since targets must
    be accurate. ``encoded`` counts sentences that went through the model.
    """

    def __init__(self, name: str = DEFAULT_TEACHER, *, pooling: str | None = None, l2_norm: bool | None = None,
                 query_prefix: str | None = None, passage_prefix: str | None = None, max_length: int = 180,
                 batch_size: int | None = None, precision: str | None = None, device: str = "cpu"):
        self.name = name
        self.path, settings = _resolve(name)
        for key, value in (("pooling", pooling), ("l2_norm", l2_norm), ("query_prefix", query_prefix),
                           ("passage_prefix", passage_prefix)):
            if value is not None:
                settings[key] = value
        self.settings = settings
        self.kind = _encoder_kind(self.path, name)
        self.max_length = max_length
        self.device = device
        if self.kind == "ance":  # ANCE's model class lives in Pyserini, whose import starts a JVM
            from pyserini.encode import AnceDocumentEncoder
            self.encoder = AnceDocumentEncoder(self.path, device=device)
        else:
            self.encoder = PooledEncoder(self.path, device, settings["pooling"], bool(settings["l2_norm"]),
                                         settings.get("passage_prefix") or None)
        self.encoder.model.eval()
        for p in self.encoder.model.parameters():
            p.requires_grad_(False)
        self.encoded = 0
        runtime = resolve(batch_size=batch_size, precision=precision)
        self.batch_size = runtime.batch_size
        self.precision = self._choose_precision(runtime.precision)
        self.dim = int(self._encode_batch(_PROBE[:1]).shape[1])
        self.encoded = 0
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ encoding
    def _encode_batch(self, texts: Sequence[str], precision: str | None = None) -> np.ndarray:
        with torch.inference_mode(), autocast(precision or self.precision, self.device):
            out = self.encoder.encode(list(texts), max_length=self.max_length)
        if isinstance(out, torch.Tensor):
            out = out.float().cpu().numpy()
        self.encoded += len(texts)
        return np.asarray(out, dtype=np.float32)

    def encode_documents(self, texts: Sequence[str], batch_size: int | None = None,
                         progress: bool = False, exact: bool = True) -> np.ndarray:
        """(N, dim) float32 teacher vectors, in batches of :data:`~pyserini_kdspd.runtime.EXACT_ROWS` texts with
        the same number of tokens.

        Without padding, and with one batch shape, a text's vector does not depend on its batch (bf16 moves by
        up to ~1e-3 with the padded width, and on AMX by up to 3e-4 with the number of rows), so a target is
        the same whether it was precomputed for a whole budget or computed during a step, and runs are
        reproducible whatever the cache held.
        ``exact=False`` fills batches across lengths (length-sorted, as the students encode): the
        faster choice when a few hundred texts of many lengths arrive at a time (Ray workers).
        """
        texts = list(texts)
        return encode_sorted(self.token_lengths(texts), lambda idx: self._encode_batch([texts[i] for i in idx]),
                             batch_size or self.batch_size, self.dim, f"teacher {self.name}" if progress else None,
                             exact=exact)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as the encoder will see it (prefix included, truncated at ``max_length``)."""
        prefix = getattr(self.encoder, "prefix", None)
        if prefix is not None:
            texts = [f"{prefix} {t}" for t in texts]
        ids = self.encoder.tokenizer(list(texts), max_length=self.max_length, truncation=True)["input_ids"]
        return [len(x) for x in ids]

    def _choose_precision(self, precision: str) -> str:
        """The concrete precision of a resolved setting: "auto" -> bf16 only if the probe agrees."""
        concrete = resolve_precision(precision, self.device)
        if precision != "auto" or concrete == "fp32":
            return concrete
        a = self._encode_batch(_PROBE, "fp32")
        b = self._encode_batch(_PROBE, "bf16")
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        return "bf16" if float(cos.min()) > 0.9999 else "fp32"

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """Hash of the weights and every setting that changes a target (names the cache folder)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"kind": self.kind, "settings": self.settings, "max_length": self.max_length,
                                 "precision": self.precision, "batches": EXACT_BATCHES},
                                sort_keys=True).encode())
            folder = Path(self.path)
            if folder.is_dir():
                for f in sorted(folder.rglob("*")):
                    if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
                        h.update(f.relative_to(folder).as_posix().encode())
                        with open(f, "rb") as fh:
                            for chunk in iter(lambda: fh.read(1 << 22), b""):
                                h.update(chunk)
            else:
                h.update(self.path.encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def query_settings(self) -> dict:
        """How to rebuild the query side with Pyserini (stored in ``StudentConfig.teacher``)."""
        return {
            "name": self.name,
            "path": self.path,
            "encoder_class": "AnceQueryEncoder" if self.kind == "ance" else "AutoQueryEncoder",
            "pooling": self.settings.get("pooling"),
            "l2_norm": bool(self.settings.get("l2_norm")),
            "query_prefix": self.settings.get("query_prefix") or "",
        }

    def save_query_encoder(self, dest) -> Path:
        """Copy the teacher's model files to ``dest`` so a student folder is self-contained."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if Path(self.path).is_dir():
            shutil.copytree(self.path, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        else:
            self.encoder.model.save_pretrained(tmp)
            self.encoder.tokenizer.save_pretrained(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return dest


class TargetCache:
    """Teacher vectors of a fixed list of English texts, as a lazily filled on-disk memmap.

    Stored at ``<cache>/teacher_targets/<teacher fingerprint>/<key>.npy`` with a
    ``<key>.done.npy`` mask. The mapping is shared, so rows written by a killed
    process survive (the kernel holds them); rows are set before their mask bit and
    :meth:`flush` (called at checkpoints) writes vectors before the mask.
    """

    def __init__(self, teacher: Teacher, texts: Sequence[str], key: str, cache_dir=None):
        self.teacher, self.texts, self.key = teacher, texts, key
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.folder = root / "teacher_targets" / teacher.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{key}.npy"
        self.done_path = self.folder / f"{key}.done.npy"
        n = len(texts)
        if not self.path.exists() or not self.done_path.exists():
            self._create(self.path, (n, teacher.dim), np.float32)
            self._create(self.done_path, (n,), np.uint8)
        self.vectors = np.lib.format.open_memmap(self.path, mode="r+")
        self.done = np.lib.format.open_memmap(self.done_path, mode="r+")
        if self.vectors.shape != (n, teacher.dim) or self.done.shape != (n,):
            raise ValueError(f"{self.path}: cached shape {self.vectors.shape} does not match "
                             f"{(n, teacher.dim)}; delete the folder {self.folder}")
        self.computed = 0

    @staticmethod
    def _create(path: Path, shape, dtype) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        m = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        m.flush()
        del m
        os.replace(tmp, path)

    def get(self, rows: Sequence[int]) -> np.ndarray:
        """Vectors of ``rows`` (computing and storing the missing ones)."""
        rows = np.asarray(rows, dtype=np.int64)
        missing = np.unique(rows[self.done[rows] == 0])
        if len(missing):
            self._compute(missing)
        return np.array(self.vectors[rows], dtype=np.float32)

    def fill(self, rows: Sequence[int] | None = None, progress: bool = True) -> int:
        """Precompute ``rows`` (all by default); returns how many were computed."""
        rows = np.arange(len(self.texts)) if rows is None else np.asarray(rows, dtype=np.int64)
        missing = np.unique(rows[self.done[rows] == 0])
        if len(missing):
            self._compute(missing, progress=progress)
        return len(missing)

    def _compute(self, rows: np.ndarray, progress: bool = False) -> None:
        step = 8192
        for s in range(0, len(rows), step):
            chunk = rows[s:s + step]
            vecs = self.teacher.encode_documents([self.texts[i] for i in chunk], progress=progress)
            self.vectors[chunk] = vecs
            self.done[chunk] = 1
            self.computed += len(chunk)
        if progress:
            self.flush()

    def flush(self) -> None:
        """Push written rows to disk, vectors before the mask (msync per step cost seconds: done at checkpoints)."""
        self.vectors.flush()
        self.done.flush()
