"""Pyserini encoders for KD-SPD, registered as ``kdspd`` with the stock CLIs.

The document side is the distilled multilingual student; the query side is the
English teacher's own query encoder (paper section 3.3), rebuilt from the
``query_encoder/`` copy and the settings the trainer saved in the model folder,
so the folder alone serves both sides:

    python -m pyserini.encode input --corpus C --fields text lang \
        output --embeddings I --to-faiss encoder --encoder models/kdspd --fields text lang
    python -m pyserini.search.faiss --index I --topics T.tsv --encoder models/kdspd --output run.txt

Pyserini picks encoder classes by substring of the model name, so a folder named
``kdspd-ance`` would fall to ANCE and one named ``my-student`` to the Auto
encoder. ``register()`` therefore puts ``kdspd`` first and also wraps every
other class so that any folder holding a ``kdspd_config.json`` reaches us.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CONFIG_NAME = "kdspd_config.json"
QUERY_ENCODER_DIR = "query_encoder"
DEFAULT_MODEL_DIR = Path("models") / "kdspd"


def is_kdspd_folder(name) -> bool:
    try:
        return bool(name) and (Path(str(name)) / CONFIG_NAME).is_file()
    except OSError:
        return False


def resolve_kdspd_model(name: str | os.PathLike) -> Path:
    """A KD-SPD model folder from a path, or the default folder for a bare ``kdspd``."""
    name = str(name)
    if is_kdspd_folder(name):
        return Path(name)
    if name.strip().lower() == "kdspd":
        default = Path(os.environ.get("PYSERINI_KDSPD_MODEL", DEFAULT_MODEL_DIR))
        if is_kdspd_folder(default):
            return default
        raise FileNotFoundError(
            f"--encoder kdspd means the default KD-SPD model folder {default}, which holds no trained "
            f"model ({CONFIG_NAME} missing). Train one with\n"
            f"  python -m pyserini_kdspd.train --student spd --output {default}\n"
            f"or pass the folder of a trained model (or set PYSERINI_KDSPD_MODEL).")
    raise FileNotFoundError(
        f"{name!r} is not a KD-SPD model folder (no {CONFIG_NAME}); train one with "
        f"`python -m pyserini_kdspd.train` or pass the folder it wrote")


def _device(device) -> str:
    from pyserini.util import resolve_device

    return resolve_device(device or "cpu", backend="torch")


def _document_encoder_base():
    from pyserini.encode import DocumentEncoder

    return DocumentEncoder


def _query_encoder_base():
    from pyserini.encode import QueryEncoder

    return QueryEncoder


class KdspdDocumentEncoder(_document_encoder_base()):
    """The distilled student behind Pyserini's ``DocumentEncoder.encode(texts, **kwargs)`` contract.

    Pyserini's ``--pooling/--l2-norm/--prefix`` flags do not apply: the model
    folder's config fixes them. ``langs`` (from ``--fields text lang``) selects
    each document's language prompt; without it the packaged language-ID model
    tags each document. Batches are length-sorted and run in bf16 where the
    CPU supports it, so a large ``--batch-size`` (e.g. 1024) pays off.
    """

    def __init__(self, model_name="kdspd", device="cpu", batch_size: int | None = None,
                 precision: str = "auto", **ignored):
        from .spd import Student

        self.path = resolve_kdspd_model(model_name)
        self.device = _device(device)
        self.model = Student.from_pretrained(str(self.path), device=self.device)
        self.model.eval()
        self.batch_size = int(batch_size or os.environ.get("PYSERINI_KDSPD_SUBBATCH", 64))
        self.precision = precision
        self.dimension = int(self.model.output_dim)

    def encode(self, texts, langs=None, titles=None, max_length=None, **kwargs):
        if titles is not None:
            texts = [f"{t} {x}".strip() for t, x in zip(titles, texts)]
        limit = self.model.config.max_length
        if max_length:  # Pyserini always passes its own default (256); never exceed the trained length
            limit = min(int(max_length), limit)
        return self.model.encode(list(texts), langs=list(langs) if langs is not None else None,
                                 batch_size=self.batch_size, max_length=limit, precision=self.precision)


def teacher_query_settings(config) -> dict:
    """Normalise the teacher settings the trainer saved (class, pooling, l2 norm, query prefix)."""
    t = dict(getattr(config, "teacher", None) or {})
    return {
        "encoder_class": t.get("encoder_class") or t.get("class") or "auto",
        "pooling": t.get("pooling", "mean"),
        "l2_norm": bool(t.get("l2_norm", True)),
        "prefix": t.get("query_prefix", t.get("prefix")) or None,
        "name": t.get("name"),
    }


class KdspdQueryEncoder(_query_encoder_base()):
    """The teacher's own query encoder, as Pyserini would build it for the teacher itself."""

    def __init__(self, encoder_dir="kdspd", device="cpu", **ignored):
        from .spd import StudentConfig
        from .spd.student import hidden_size

        path = resolve_kdspd_model(encoder_dir)
        config = StudentConfig.load(str(path))
        qdir = path / QUERY_ENCODER_DIR
        if not qdir.is_dir():
            raise FileNotFoundError(f"{path}: the query side ({QUERY_ENCODER_DIR}/, the teacher's query "
                                    f"encoder) is missing; the folder is incomplete")
        s = teacher_query_settings(config)
        self.settings = s
        self.dimension = hidden_size(qdir)
        cls = _query_class(s["encoder_class"])
        kwargs = dict(encoder_dir=str(qdir), device=_device(device))
        if issubclass(cls, _query_class("auto")):
            # Pyserini's AutoQueryEncoder joins prefix and query with a space itself.
            prefix = s["prefix"].rstrip() if s["prefix"] else None
            kwargs.update(pooling=s["pooling"], l2_norm=s["l2_norm"], prefix=prefix)
        self.inner = cls(**kwargs)
        super().__init__()
        self.has_model = True

    def encode(self, query: str, **kwargs):
        import torch

        with torch.inference_mode():
            return np.asarray(self.inner.encode(query, **kwargs), dtype=np.float32)


# ------------------------------------------------------------------ registration
_ORIGINAL_QUERY_CLASSES: dict = {}


def _query_class(name: str):
    """Pyserini's own query encoder class, by class name (``AnceQueryEncoder``) or map key (``ance``)."""
    import pyserini.encode as pe

    cls = getattr(pe, name, None) if name.endswith("QueryEncoder") else None
    cls = cls or _ORIGINAL_QUERY_CLASSES.get(name) or pe.query_encoder_class_map.get(name)
    if cls is None or cls is KdspdQueryEncoder:
        cls = pe.AutoQueryEncoder
    return getattr(cls, "_kdspd_original", cls)


def _routed(cls, kdspd_cls):
    """A subclass of ``cls`` whose construction yields ``kdspd_cls`` when given a KD-SPD folder."""
    if cls is None or getattr(cls, "_kdspd_original", None) is not None:
        return cls

    def __new__(klass, *args, **kwargs):
        name = kwargs.get("model_name") or kwargs.get("encoder_dir") or (args[0] if args else None)
        if is_kdspd_folder(name) or str(name).strip().lower() == "kdspd":
            return kdspd_cls(*args, **kwargs)
        return super(routed, klass).__new__(klass)

    body = {"__new__": __new__, "_kdspd_original": cls, "__module__": cls.__module__, "__doc__": cls.__doc__}
    if cls.__name__ == "AutoDocumentEncoder":
        body["encode"] = _length_sorted(cls.encode)
    routed = type(cls.__name__, (cls,), body)
    return routed


SUB_BATCH = 64


def _length_sorted(encode):
    """Pyserini's own ``encode``, run without autograd on length-sorted sub-batches.

    Same pooling and masking, so the same vectors (to float rounding), but padding
    stays short and no graph is kept: ``pyserini.encode --batch-size 512`` with the
    Auto encoder then runs several times faster on CPU (see benchmarks/).
    """
    import functools

    @functools.wraps(encode)
    def fast(self, texts, titles=None, max_length=256, add_sep=False, **kwargs):
        import torch

        texts = list(texts)
        with torch.inference_mode():
            if len(texts) <= SUB_BATCH:
                return encode(self, texts, titles=titles, max_length=max_length, add_sep=add_sep, **kwargs)
            lengths = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length,
                                     return_length=True)["length"]
            order = np.argsort(lengths, kind="stable")
            out = None
            for start in range(0, len(order), SUB_BATCH):
                idx = order[start:start + SUB_BATCH]
                part = encode(self, [texts[i] for i in idx],
                              titles=[titles[i] for i in idx] if titles is not None else None,
                              max_length=max_length, add_sep=add_sep, **kwargs)
                if out is None:
                    out = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
                out[idx] = part
            return out

    return fast


def _claiming(kdspd_cls, others: dict, auto):
    """The ``kdspd`` map entry: claims KD-SPD folders and the bare name ``kdspd``; any other name
    that merely contains "kdspd" continues Pyserini's own substring search, as if we were absent."""

    def __new__(klass, *args, **kwargs):
        name = kwargs.get("model_name") or kwargs.get("encoder_dir") or (args[0] if args else None)
        if is_kdspd_folder(name) or str(name).strip().lower() == "kdspd":
            return kdspd_cls(*args, **kwargs)
        for key, cls in others.items():
            if cls is not None and key in str(name).lower():
                return cls(*args, **kwargs)
        log.warning("%s is not a KD-SPD folder; using Pyserini's %s with its defaults (pass "
                    "--encoder-class auto to set pooling, normalisation and prefix)", name, auto.__name__)
        return auto(*args, **kwargs)

    return type(f"{kdspd_cls.__name__}Claim", (), {"__new__": __new__, "__doc__": _claiming.__doc__})


def register() -> None:
    """Make ``kdspd`` (and any KD-SPD folder) usable by ``pyserini.encode`` and ``pyserini.search.faiss``."""
    import pyserini.encode as pe

    if getattr(pe, "_kdspd_registered", False):
        return
    for mapping, ours in ((pe.document_encoder_class_map, KdspdDocumentEncoder),
                          (pe.query_encoder_class_map, KdspdQueryEncoder)):
        if mapping is pe.query_encoder_class_map:
            _ORIGINAL_QUERY_CLASSES.update({k: v for k, v in mapping.items() if v is not None})
        auto = _routed(pe.AutoDocumentEncoder if ours is KdspdDocumentEncoder else pe.AutoQueryEncoder, ours)
        routed = {k: _routed(v, ours) for k, v in mapping.items() if k != "kdspd"}
        mapping.clear()
        mapping["kdspd"] = _claiming(ours, routed, auto)  # first, so it wins Pyserini's substring match
        mapping.update(routed)
        if ours is KdspdDocumentEncoder:
            pe.AutoDocumentEncoder = auto
        else:
            pe.AutoQueryEncoder = auto
    pe._kdspd_registered = True


def guard_faiss_dimension() -> None:
    """Make FaissSearcher fail clearly (not with a FAISS assertion) when a KD-SPD query side
    and an index built by another model disagree in dimension."""
    from pyserini.search.faiss import _searcher

    original = _searcher.FaissSearcher.__init__
    if getattr(original, "_kdspd_guard", False):
        return

    def __init__(self, index_dir, query_encoder, *args, **kwargs):
        original(self, index_dir, query_encoder, *args, **kwargs)
        qdim = getattr(self.query_encoder, "dimension", None)
        if isinstance(self.query_encoder, KdspdQueryEncoder) and qdim and qdim != self.dimension:
            raise ValueError(f"{index_dir}: index vectors have dimension {self.dimension}, but the KD-SPD "
                             f"query encoder produces {qdim}: the index was built with another model")

    __init__._kdspd_guard = True
    _searcher.FaissSearcher.__init__ = __init__


register()  # pyserini.encode is loaded by now (our base classes come from it)
READY = True
