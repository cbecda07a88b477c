"""Pyserini encoders for KD-SPD, added to the stock CLIs' encoder maps as ``kdspd``.

The document side is the distilled multilingual student; the query side is the
English teacher's own query encoder (paper section 3.3), rebuilt from the
``query_encoder/`` copy and the settings the trainer saved in the model folder,
so the folder alone serves both sides:

    python -m pyserini.encode input --corpus C --fields text lang \
        output --embeddings I --to-faiss encoder --encoder models/kdspd --fields text lang
    python -m pyserini.search.faiss --index I --topics T.tsv --encoder models/kdspd --output run.txt

Pyserini picks an encoder class by the first key of its map that occurs in the
model name, or by ``--encoder-class``. ``register()`` adds ``kdspd`` as the
first key of both maps and touches nothing else, so a KD-SPD folder is reached
by ``--encoder kdspd`` (the default folder, or ``$PYSERINI_KDSPD_MODEL``), by any
path containing ``kdspd``, or from Python by ``encoder_class="kdspd"`` (the stock
CLIs' ``--encoder-class`` only accepts Pyserini's own fixed list).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from .spd.student import CONFIG_NAME, QUERY_ENCODER_DIR

log = logging.getLogger(__name__)

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
        f"{name!r} is not a KD-SPD model folder (no {CONFIG_NAME}). Pyserini chose the kdspd encoder "
        f"because the name contains 'kdspd' (or --encoder-class kdspd was given): pass the folder a "
        f"`python -m pyserini_kdspd.train` run wrote, or name Pyserini's class with --encoder-class "
        f"(for example auto) for another model")


def _device(device) -> str:
    from pyserini.util import resolve_device

    return resolve_device(device or "cpu", backend="torch")


def _document_encoder_base():
    from pyserini.encode import DocumentEncoder

    return DocumentEncoder


def _query_encoder_base():
    from pyserini.encode import QueryEncoder

    return QueryEncoder


_LANG_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def document_fields(texts, langs=None) -> tuple[list[str], list[str | None] | None]:
    """The ``texts`` and ``langs`` Pyserini hands over, checked before anything is encoded.

    Pyserini gives ``None`` for an empty field: an empty text is encoded by the documented rule
    (the passage prefix alone, like any empty string), an empty ``lang`` means language ID. A
    ``lang`` that is no language code is an error: it is what Pyserini makes of a document that
    has only ``contents`` when ``--fields text lang`` is asked for (it splits contents at newlines).
    """
    texts = ["" if t is None else t for t in texts]
    if langs is None:
        return texts, None
    langs = [None if not lang or not str(lang).strip() else str(lang).strip() for lang in langs]
    for text, lang in zip(texts, langs):
        if lang is not None and not _LANG_CODE.match(lang):
            raise ValueError(
                f"lang field {lang[:60]!r} (document text {text[:60]!r}) is not a language code. Pyserini "
                f"splits the `contents` of a document without `text`/`lang` fields at each newline, so its "
                f"second line becomes `lang`: give every document `text` and `lang` fields (`lang` may be "
                f"empty: language ID), or encode an untagged corpus with `--fields text` on both sides")
    return texts, langs


class KdspdDocumentEncoder(_document_encoder_base()):
    """The distilled student behind Pyserini's ``DocumentEncoder.encode(texts, **kwargs)`` contract.

    Pyserini's ``--pooling/--l2-norm/--prefix`` flags do not apply: the model
    folder's config fixes them. ``langs`` (from ``--fields text lang``) selects
    each document's language prompt; without it the packaged language-ID model
    tags each document. Each ``--batch-size`` chunk runs in length-sorted sub-batches,
    so a large ``--batch-size`` (e.g. 1024) pays off. Pyserini has no flags for
    precision, sub-batch size or threads: they come from :func:`pyserini_kdspd.runtime.resolve`
    (``PYSERINI_KDSPD_PRECISION``, ``PYSERINI_KDSPD_BATCH_SIZE``, ``PYSERINI_KDSPD_THREADS``).
    """

    def __init__(self, model_name="kdspd", device="cpu", batch_size: int | None = None,
                 precision: str | None = None, **ignored):
        from .runtime import resolve
        from .spd import Student

        self.path = resolve_kdspd_model(model_name)
        self.device = _device(device)
        self.model = Student.from_pretrained(str(self.path), device=self.device)
        self.model.eval()
        self.settings = resolve(self.model.config.to_dict(), batch_size=batch_size, precision=precision)
        self.settings.apply_threads()
        self.dimension = int(self.model.output_dim)

    def encode(self, texts, langs=None, titles=None, max_length=None, **kwargs):
        texts, langs = document_fields(texts, langs)
        if titles is not None:
            texts = [f"{t} {x}".strip() for t, x in zip(titles, texts)]
        limit = self.settings.max_length
        if max_length:  # Pyserini always passes its own default (256); never exceed the trained length
            limit = min(int(max_length), limit)
        return self.model.encode(texts, langs=langs,
                                 batch_size=self.settings.batch_size, max_length=limit,
                                 precision=self.settings.precision)


def teacher_query_settings(config) -> dict:
    """The teacher's query side as the trainer saved it (``Teacher.query_settings``)."""
    t = dict(getattr(config, "teacher", None) or {})
    return {"encoder_class": t.get("encoder_class") or "auto", "pooling": t.get("pooling", "mean"),
            "l2_norm": bool(t.get("l2_norm", True)), "prefix": t.get("query_prefix") or None}


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
def _query_class(name: str):
    """Pyserini's own query encoder class, by class name (``AnceQueryEncoder``) or map key (``ance``)."""
    import pyserini.encode as pe

    cls = getattr(pe, name, None) if name.endswith("QueryEncoder") else pe.query_encoder_class_map.get(name)
    return pe.AutoQueryEncoder if cls is None or cls is KdspdQueryEncoder else cls


def register() -> None:
    """Add ``kdspd`` as the first key of Pyserini's document and query encoder maps (idempotent).

    First, because Pyserini takes the first key that occurs in the model name: a
    path such as ``models/kdspd-mdpr`` must not fall to ``dpr``. The maps keep
    every one of Pyserini's own entries, in order, with the same classes.
    """
    import pyserini.encode as pe

    for mapping, ours in ((pe.document_encoder_class_map, KdspdDocumentEncoder),
                          (pe.query_encoder_class_map, KdspdQueryEncoder)):
        if mapping.get("kdspd") is ours and next(iter(mapping)) == "kdspd":
            continue
        theirs = [(k, v) for k, v in mapping.items() if k != "kdspd"]
        mapping.clear()
        mapping["kdspd"] = ours
        mapping.update(theirs)


register()  # pyserini.encode is loaded by now (our base classes come from it)
