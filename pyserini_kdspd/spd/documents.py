"""A saved student as a document encoder, with Pyserini's field rules but without importing Pyserini.

Importing Pyserini starts a JVM (about 10 s and a few hundred MB per process), which an
encoding worker never needs: a Ray actor or other worker process uses
:class:`StudentDocumentEncoder` directly, and the Pyserini-facing
:class:`pyserini_kdspd.encoders.KdspdDocumentEncoder` wraps the same object, so both give the
same vectors for the same texts.
"""
from __future__ import annotations

import os
from pathlib import Path

from .languages import is_language_code
from .student import CONFIG_NAME

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
        if lang is not None and not is_language_code(lang):
            raise ValueError(
                f"lang field {lang[:60]!r} (document text {text[:60]!r}) is not a language code. Pyserini "
                f"splits the `contents` of a document without `text`/`lang` fields at each newline, so its "
                f"second line becomes `lang`: give every document `text` and `lang` fields (`lang` may be "
                f"empty: language ID), or encode an untagged corpus with `--fields text` on both sides")
    return texts, langs


class StudentDocumentEncoder:
    """``encode(texts, langs)`` of a saved student, with the settings of :func:`pyserini_kdspd.runtime.resolve`.

    ``langs`` selects each document's language prompt; without it (or for an empty entry) the
    packaged language-ID model tags the document. Texts run in length-sorted sub-batches of
    the resolved batch size, so callers may hand over large chunks.
    """

    def __init__(self, model_name="kdspd", device: str = "cpu", batch_size: int | None = None,
                 precision: str | None = None, threads: int | None = None):
        from ..runtime import resolve
        from .student import Student

        self.path = resolve_kdspd_model(model_name)
        self.device = device
        self.model = Student.from_pretrained(str(self.path), device=device)
        self.model.eval()
        self.settings = resolve(self.model.config.to_dict(), batch_size=batch_size, precision=precision,
                                threads=threads)
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
