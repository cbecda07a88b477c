"""Distillation: strict bitext, per-language sampler, losses, target cache, exact resume, dev, CLI.

Real models only: the packaged all-MiniLM-L6-v2 is both the teacher and (with a
1-layer, 4-slot prompt decoder) a tiny student backbone, so every test runs on CPU
in seconds.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from pyserini_kdspd.distill import (Batch, DevEvaluator, DistillationTrainer, KDEncoderLoss, LanguageBatchSampler,
                                    MSELoss, TargetCache, Teacher, TrainingArguments, is_complete,
                                    latest_checkpoint, load_bitexts, markdown_table, read_bitext)
from pyserini_kdspd.distill.losses import build_loss, query_teacher
from pyserini_kdspd.distill.dev import dev_summary
from pyserini_kdspd.distill.trainer import bitext_targets, planned_rows, precompute_targets, set_seed
from pyserini_kdspd.io import FormatError
from pyserini_kdspd.spd import Student, StudentConfig

TINY = dict(encoder="all-MiniLM-L6-v2", prompt_length=4, decoder_layers=1, max_length=32, normalize=True)


@pytest.fixture(scope="module")
def teacher():
    return Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32")


def test_teacher_encodes_as_pyserini_without_importing_it(teacher):
    """PooledEncoder is Pyserini's AutoDocumentEncoder.encode minus the Pyserini import (and its JVM)."""
    from pyserini.encode import AutoDocumentEncoder  # this test process may import Pyserini; training does not

    from pyserini_kdspd.distill.teacher import PooledEncoder

    texts = ["Hello world.", "What is the boiling point of water at high altitude, and why?", "x"]
    for pooling, l2_norm, prefix in [("mean", True, None), ("cls", False, "passage:")]:
        ours = PooledEncoder(teacher.path, pooling=pooling, l2_norm=l2_norm, prefix=prefix)
        theirs = AutoDocumentEncoder(teacher.path, device="cpu", pooling=pooling, l2_norm=l2_norm, prefix=prefix)
        with torch.inference_mode():
            np.testing.assert_allclose(ours.encode(texts, max_length=32).numpy(),
                                       theirs.encode(texts, max_length=32), atol=1e-6)


def tiny_student(kind="spd", seed=0, languages=("en", "de", "fr")):
    set_seed(seed)
    return Student.build(StudentConfig(student=kind, languages=list(languages), **TINY))


class Killed(RuntimeError):
    """Stands in for a crash in the middle of a run."""


def killed_after(k: int) -> type[DistillationTrainer]:
    """A trainer that crashes when asked for step k + 1."""
    class KilledTrainer(DistillationTrainer):
        calls = 0

        def make_batch(self, examples):
            KilledTrainer.calls += 1
            if KilledTrainer.calls > k:
                raise Killed
            return super().make_batch(examples)
    return KilledTrainer


def test_read_bitext_strict(tmp_path):
    good = tmp_path / "en-de.tsv"
    good.write_text("Hello.\tHallo.\tsrc\nThanks.\tDanke.\n", encoding="utf-8")
    b = read_bitext(good)
    assert b.lang == "de" and b.english == ["Hello.", "Thanks."] and b.other == ["Hallo.", "Danke."]
    assert b.sources == ["src", ""] and b.pairs(1) == [("Hello.", "Hallo.")]
    bad = tmp_path / "en-fr.tsv"
    bad.write_text("Hello.\tBonjour.\tsrc\nYes.\tOui.\tsrc\nonly one column\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"en-fr.tsv:3: .*column"):
        read_bitext(bad)
    empty = tmp_path / "en-it.tsv"
    empty.write_text("Hello.\t \tsrc\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"en-it.tsv:1: empty it sentence"):
        read_bitext(empty)
    blank = tmp_path / "en-es.tsv"  # a blank line holds no pair: skipped, as by every reader in pyserini_kdspd.io
    blank.write_text("Hello.\tHola.\n\nYes.\tSí.\n", encoding="utf-8")
    assert read_bitext(blank).pairs() == [("Hello.", "Hola."), ("Yes.", "Sí.")]
    latin1 = tmp_path / "en-pt.tsv"
    latin1.write_bytes("Yes.\tSim.\nNo.\tNão.\n".encode("latin-1"))
    with pytest.raises(FormatError, match=r"en-pt.tsv:2: not UTF-8 \(byte 0xe3"):
        read_bitext(latin1)
    bom = tmp_path / "en-nl.tsv"  # a Windows editor's byte-order mark is not part of the first sentence
    bom.write_text("\ufeffHello.\tHallo.\n", encoding="utf-8")
    assert read_bitext(bom).pairs() == [("Hello.", "Hallo.")]
    with pytest.raises(FileNotFoundError, match="xx"):
        load_bitexts(tmp_path, languages=["de", "xx"])


def test_sampler_per_language_deterministic_resumable(bitext_dir):
    bitexts = load_bitexts(bitext_dir, max_pairs=25, seed=1)
    assert {l: len(b) for l, b in bitexts.items()} == {"de": 25, "fr": 25}
    s1 = LanguageBatchSampler(bitexts, batch_per_language=3, seed=7)
    batches = [s1.next_batch() for _ in range(12)]  # 12 x 3 > 25: crosses an epoch boundary
    for batch in batches:
        assert [e.lang for e in batch] == ["en"] * 3 + ["de"] * 3 + ["fr"] * 3
        for e in batch:
            b = bitexts[e.source_lang]
            assert e.english == b.english[e.row] and e.row in set(b.rows.tolist())
            assert e.text == (e.english if e.lang == "en" else b.other[e.row])
    # each epoch of a language visits every pair once
    de_rows = [e.row for batch in batches for e in batch if e.lang == "de"]
    assert sorted(de_rows[:25]) == sorted(bitexts["de"].rows.tolist())
    # deterministic from the seed, different across seeds
    s2 = LanguageBatchSampler(bitexts, batch_per_language=3, seed=7)
    assert [s2.next_batch() for _ in range(12)] == batches
    s3 = LanguageBatchSampler(bitexts, batch_per_language=3, seed=8)
    assert [s3.next_batch() for _ in range(12)] != batches
    # resumable: a sampler restored from the position after 5 batches continues identically
    s4 = LanguageBatchSampler(bitexts, batch_per_language=3, seed=7)
    for _ in range(5):
        s4.next_batch()
    state = json.loads(json.dumps(s4.state_dict()))
    s5 = LanguageBatchSampler(bitexts, batch_per_language=3, seed=7)
    s5.load_state_dict(state)
    assert [s5.next_batch() for _ in range(7)] == batches[5:]


def test_losses_equal_hand_computed_mse(teacher):
    student = tiny_student().eval()
    texts = ["Guten Morgen.", "Bonjour tout le monde.", "Good morning."]
    english = ["Good morning.", "Hello everyone.", "Good morning."]
    langs = ["de", "fr", "en"]
    targets = torch.from_numpy(teacher.encode_documents(english))
    batch = Batch(texts, langs, english, targets)
    with torch.no_grad():
        got = MSELoss(32)(student, batch).loss.item()
        s = student.encode(texts, langs, precision="fp32")
        s_en = student.encode(english[:2], ["en", "en"], precision="fp32")
        got_kd = KDEncoderLoss(32)(student, batch).loss.item()
    t = targets.numpy()
    assert got == pytest.approx(((s - t) ** 2).mean(), rel=1e-4)
    expected_kd = ((s - t) ** 2).mean() + ((s_en - t[:2]) ** 2).mean()
    assert got_kd == pytest.approx(expected_kd, rel=1e-4)


def test_target_cache_is_reused_across_runs(teacher, bitext_dir, tmp_path):
    bitexts = load_bitexts(bitext_dir)
    cache = tmp_path / "cache"
    args = TrainingArguments(output_dir=str(tmp_path / "a"), max_steps=2, batch_per_language=2, progress=False,
                             max_length=32)
    DistillationTrainer(tiny_student("spd"), teacher, bitexts, args, cache_dir=cache).train()
    assert list((cache / "teacher_targets" / teacher.fingerprint).glob("bitext-de-*.npy"))
    # a KD-Encoder run on the same bitext, with a freshly loaded teacher: no teacher forward pass at all
    second = Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32")
    assert second.fingerprint == teacher.fingerprint and second.encoded == 0
    args_b = TrainingArguments(output_dir=str(tmp_path / "b"), max_steps=2, batch_per_language=2, progress=False,
                               max_length=32)
    log = DistillationTrainer(tiny_student("mean"), second, bitexts, args_b, cache_dir=cache).train()
    assert second.encoded == 0 and log["targets_computed"] == 0
    # cached vectors are the teacher's vectors
    b = bitexts["de"]
    c = TargetCache(second, b.english, f"bitext-de-{b.english_key()}", cache)
    rows = np.flatnonzero(c.done).tolist()
    drawn = LanguageBatchSampler(bitexts, args.batch_per_language, args.seed)  # the rows the two steps drew
    assert rows == sorted({e.row for _ in range(args.max_steps) for e in drawn.next_batch() if e.source_lang == "de"})
    np.testing.assert_allclose(c.get(rows), teacher.encode_documents([b.english[i] for i in rows]), atol=1e-5)


def test_a_teacher_target_does_not_depend_on_the_batch_it_was_computed_in(bitext_dir):
    # bf16, where padding to another width moves a vector by up to ~1e-3: a cached target must be the same
    # whether a whole budget was precomputed or a step computed it among its own batch
    bf16 = Teacher("all-MiniLM-L6-v2", max_length=64, precision="bf16")
    texts = read_bitext(bitext_dir / "en-de.tsv").english[:24]
    together = bf16.encode_documents(texts)
    alone = np.concatenate([bf16.encode_documents([t]) for t in texts])
    mixed = bf16.encode_documents(texts[::-1][:10] + texts[:5])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(mixed[:10], together[::-1][:10])


def test_precomputed_targets_are_exactly_the_rows_the_budget_draws(teacher, bitext_dir, tmp_path):
    bitexts = load_bitexts(bitext_dir)
    computed = precompute_targets(teacher, bitexts, 2, 42, 3, tmp_path, progress=False)
    sampler = LanguageBatchSampler(bitexts, 2, 42)
    drawn: dict[str, set] = {lang: set() for lang in bitexts}
    for _ in range(3):
        for e in sampler.next_batch():
            drawn[e.source_lang].add(e.row)
    for lang, b in bitexts.items():
        assert np.flatnonzero(bitext_targets(teacher, lang, b, tmp_path).done).tolist() == sorted(drawn[lang])
    assert computed == sum(map(len, drawn.values()))
    assert precompute_targets(teacher, bitexts, 2, 42, 3, tmp_path, progress=False) == 0


@pytest.mark.slow
def test_resume_gives_exactly_the_uninterrupted_weights(teacher, bitext_dir, tmp_path):
    bitexts = load_bitexts(bitext_dir)
    n, k = 4, 2

    def args(name):  # dropout on, warmup + linear decay, grad clipping: everything resume must restore
        return TrainingArguments(output_dir=str(tmp_path / name), max_steps=n, warmup=1, batch_per_language=2,
                                 max_length=32, checkpoint_every=k, progress=False, seed=3)

    straight = tiny_student(seed=0)
    DistillationTrainer(straight, teacher, bitexts, args("straight"), cache_dir=tmp_path / "c1").train()

    with pytest.raises(Killed):
        killed_after(k)(tiny_student(seed=0), teacher, bitexts, args("killed"), cache_dir=tmp_path / "c2").train()
    assert latest_checkpoint(tmp_path / "killed").name == f"step-{k:07d}" and not is_complete(tmp_path / "killed")
    resumed = tiny_student(seed=123)  # a different init: everything must come from the checkpoint
    log = DistillationTrainer(resumed, teacher, bitexts, args("killed"), cache_dir=tmp_path / "c2").train(resume=True)
    assert log["resumed_from"] == [k] and log["steps"] == n
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differing, differing[:5]
    fresh = tiny_student(seed=0).state_dict()
    assert any(not torch.equal(a[name], fresh[name]) for name in a)  # training did change the weights


def test_adam_eps_reaches_the_optimizer_and_lets_a_residual_decoder_take_full_steps(teacher, bitext_dir, tmp_path):
    """The paper's mean MSE over unit vectors has tiny gradients, and a residual student's decoder sees them
    scaled by its gate (0 at the start): with torch's eps of 1e-8 in Adam's denominator the decoder's steps
    shrink well below its learning rate; with a smaller eps they are full Adam steps (train.ADAM_EPS)."""
    from pyserini_kdspd.distill.adam import adam_table
    bitexts = load_bitexts(bitext_dir)
    moved, shrink = {}, {}
    for eps in (1e-8, 1e-12):
        set_seed(0)
        student = Student.build(StudentConfig(student="spd", residual=True, languages=["en", "de", "fr"], **TINY))
        before = {k: v.clone() for k, v in student.state_dict().items()}
        args = TrainingArguments(output_dir=str(tmp_path / f"eps{eps:g}"), max_steps=4, warmup=0,
                                 schedule="constant", batch_per_language=2, max_length=32, lr=1e-4, head_lr=1e-3,
                                 adam_eps=eps, precision="fp32", checkpoint_every=0, progress=False, seed=0)
        trainer = DistillationTrainer(student, teacher, bitexts, args, cache_dir=tmp_path / "cache")
        assert {g["eps"] for g in trainer._optimizer()[0].param_groups} == {eps}
        trainer.train()
        after = student.state_dict()
        moved[eps] = torch.cat([(after[k] - before[k]).abs().flatten() for k in after
                                if k.startswith("decoder.")]).median().item()
        step, used, rows = adam_table(tmp_path / f"eps{eps:g}")  # the checkpoint of the last step
        shrink[eps] = {r["part"]: r["median_shrink"] for r in rows}
        no_gradient = {r["part"]: r["no_gradient"] for r in rows}
        assert step == 4 and used == eps and set(shrink[eps]) == {"encoder.embeddings", "encoder.layers", "prompts",
                                                                  "decoder", "gate"}
    # what distill.adam reports is what moved: at 1e-8 the decoder's and prompts' steps shrink, at 1e-12 nothing does
    assert shrink[1e-8]["decoder"] < 0.5 and shrink[1e-8]["prompts"] < 0.5, shrink
    assert all(v > 0.99 for v in shrink[1e-12].values()), shrink
    assert 0 < no_gradient["encoder.embeddings"] < 1 and no_gradient["decoder"] == 0  # unseen positions have none
    # the gate is 0 at step 1 (no decoder gradient), then 3 steps of lr 1e-3 each
    assert moved[1e-12] > 1e-3 and moved[1e-8] < moved[1e-12] / 2, moved
    with pytest.raises(ValueError, match="adam_eps must be > 0"):
        TrainingArguments(output_dir=str(tmp_path / "x"), max_steps=1, adam_eps=0)


def test_a_folder_is_complete_only_with_a_trained_step_and_its_weights(teacher, bitext_dir, tmp_path):
    for bad, match in [(dict(max_minutes=0), "max_minutes must be > 0"),
                       (dict(max_steps=1, batch_per_language=0), "batch_per_language must be >= 1")]:
        with pytest.raises(ValueError, match=match):
            TrainingArguments(output_dir=str(tmp_path / "x"), **bad)
    bitexts = load_bitexts(bitext_dir)
    out = tmp_path / "student"
    args = TrainingArguments(output_dir=str(out), max_minutes=1e-9, batch_per_language=2, max_length=32,
                             progress=False)
    trainer = DistillationTrainer(tiny_student(), teacher, bitexts, args, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="no step trained"):
        trainer.finalize(0, {})
    assert not out.exists()
    log = trainer.train()  # a minutes budget over before the first step still trains that step
    assert log["steps"] == 1 and len(log["losses"]) == 1 and is_complete(out)
    # extending the finished run: it stops counting as finished before anything in it is rewritten
    more = TrainingArguments(output_dir=str(out), max_steps=3, batch_per_language=2, max_length=32, progress=False)
    with pytest.raises(Killed):
        killed_after(0)(tiny_student(), teacher, bitexts, more, cache_dir=tmp_path / "cache").train(resume=True)
    assert not is_complete(out) and (out / "model.safetensors").is_file()
    assert json.loads((out / "training_log.json").read_text())["complete"] is False


def test_query_vectors_are_precomputed_for_the_objectives_that_read_them_and_every_part_is_logged(
        bitext_dir, tmp_path):
    from pyserini.encode import AutoQueryEncoder

    # MiniLM with e5's two prefixes: queries encode unlike documents, so their vectors get a cache of their own
    teacher = Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32", query_prefix="query:",
                      passage_prefix="passage:")
    queries = query_teacher(teacher)
    assert queries is not teacher and query_teacher(teacher) is queries and queries.fingerprint != teacher.fingerprint
    bitexts = load_bitexts(bitext_dir, max_pairs=10)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, batch_per_language=2, max_length=32,
                             progress=False)
    trainer = DistillationTrainer(tiny_student(), teacher, bitexts, args, loss=build_loss("mse+score-kd:0.5", 32),
                                  cache_dir=tmp_path / "cache")
    assert trainer.precompute_targets(progress=False) == 2 * sum(
        len(rows) for rows in planned_rows(bitexts, 2, args.seed, 2).values())  # both sides, before the first step
    batch = trainer.make_batch(LanguageBatchSampler(bitexts, 2, args.seed).next_batch())
    stock = AutoQueryEncoder(teacher.path, pooling="mean", l2_norm=True, prefix="query:")  # what search will use
    np.testing.assert_allclose(batch.queries.numpy(), np.stack([stock.encode(e, max_length=32) for e in batch.english]),
                               atol=1e-5)
    np.testing.assert_allclose(batch.targets.numpy(), teacher.encode_documents(batch.english), atol=1e-6)
    log = trainer.train()
    assert log["loss"] == "mse+score-kd:0.5" and log["targets_computed"] == 0
    assert [step for step, _ in log["loss_parts"]] == [1, 2]
    for (_, total), (_, parts) in zip(log["losses"], log["loss_parts"]):
        assert set(parts) == {"mse", "score-kd"} and total == pytest.approx(parts["mse"] + 0.5 * parts["score-kd"])
    # a loss that reads no query vector makes no second cache
    plain = DistillationTrainer(tiny_student(), teacher, bitexts, args, cache_dir=tmp_path / "plain")
    assert plain.query_caches is None and plain.precompute_targets(progress=False) == trainer.precomputed // 2


def test_dev_evaluator_on_a_flores_subset(teacher, shared_data, tmp_path):
    dev = DevEvaluator(teacher, languages=["de", "fi"], max_sentences=30,
                       folder=shared_data / "flores200" / "devtest", cache_dir=tmp_path)
    assert dev.languages == ["en", "de", "fi"] and len(dev.english) == 30
    # mean pooling + L2 norm over MiniLM *is* the teacher: English must be reproduced exactly
    student = tiny_student("mean", languages=["en", "de"])
    results = dev(student, precision="fp32")
    assert results["en"]["mse"] < 1e-9
    assert results["en"]["p1_xx_en"] == 1.0 and results["en"]["p1_en_xx"] == 1.0
    for lang in ("de", "fi"):
        r = results[lang]
        assert 0 < r["mse"] < 2 / 384 and 0 <= r["p1_xx_en"] <= 1 and 0 <= r["p1_en_xx"] <= 1
    assert results["fi"]["zero_shot"] and not results["de"]["zero_shot"]
    assert results["de"]["p1_en_xx"] > 1 / 30  # an English model still matches names and numbers
    table = markdown_table(results, before=results)
    assert "fi (zero-shot)" in table and "| de |" in table and "→" in table
    assert results["mean_seen"]["mse"] == results["de"]["mse"]  # Finnish never selects
    assert results["pooled"]["languages"] == ["en", "de"] and 0 < results["pooled"]["map"] <= 1  # no Finnish
    assert "Pooled MAP (English queries by the teacher against en, de by the student" in table
    # MiniLM has no query prefix: its query side is its document side
    assert results["pooled"]["query_map"] == results["pooled"]["map"]
    assert "Pooled MAP with the teacher's query encoder" in table
    # a student trained without German (train --languages): German is zero-shot too, and nothing is left to select by
    held = DevEvaluator(teacher, languages=["de", "fi"], max_sentences=30, trained=["el"],
                        folder=shared_data / "flores200" / "devtest", cache_dir=tmp_path)(student, precision="fp32")
    assert held["de"]["zero_shot"] and held["fi"]["zero_shot"] and not held["en"]["zero_shot"]
    assert "mean_seen" not in held and held["mean"]["mse"] == pytest.approx(results["mean"]["mse"])
    assert held["pooled"]["languages"] == ["en"]


def test_prompt_swap_measures_how_much_the_language_prompts_change_a_students_vectors(shared_data, tmp_path):
    """A fresh KD-SPD's prompts differ by language, so swapping them moves its vectors; made identical (u = v = 1),
    they move nothing; KD-Encoder has none. The figure is cached beside the weights and redone when they change."""
    import torch

    from pyserini_kdspd import io
    from pyserini_kdspd.distill.dev import prompt_swap

    flores = shared_data / "flores200" / "devtest"
    student = tiny_student("spd")
    folder = student.save_pretrained(tmp_path / "spd")
    swap = prompt_swap(folder, flores, max_sentences=4)
    assert set(swap["by_language"]) == {"en", "de", "fr"} and swap["mean"] > 1e-4
    with torch.no_grad():
        student.prompts.lang_u.fill_(1.0)
        student.prompts.lang_v.fill_(1.0)
    student.save_pretrained(folder)  # new weights: the cached figure is not reused
    assert prompt_swap(folder, flores, max_sentences=4) == {"mean": 0.0, "by_language": dict.fromkeys(swap["by_language"], 0.0)}
    cached = io.read_json(folder / "prompt_swap.json")
    cached["result"]["mean"] = 0.5
    io.write_json(folder / "prompt_swap.json", cached)
    assert prompt_swap(folder, flores, max_sentences=4)["mean"] == 0.5  # same weights, same sentences: read back
    assert prompt_swap(tiny_student("mean").save_pretrained(tmp_path / "mean"), flores, max_sentences=4) is None


def test_dev_pooled_map_on_the_query_side_encodes_english_as_searches_do(shared_data, tmp_path):
    from pyserini.encode import AutoQueryEncoder

    from pyserini_kdspd.distill.dev import dev_summary, pooled_map

    # MiniLM with e5's two prefixes: the query side differs from the documents' side
    teacher = Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32", query_prefix="query:",
                      passage_prefix="passage:")
    dev = DevEvaluator(teacher, languages=["de"], max_sentences=20, folder=shared_data / "flores200" / "devtest",
                       cache_dir=tmp_path)
    student = tiny_student("mean", languages=["en", "de"])
    results = dev(student, precision="fp32")
    stock = AutoQueryEncoder(teacher.path, pooling="mean", l2_norm=True, prefix="query:")  # what search will use
    queries = np.stack([stock.encode(e, max_length=32) for e in dev.english])
    pools = [student.encode(dev.sentences[lang], lang, precision="fp32") for lang in ("en", "de")]
    assert results["pooled"]["query_map"] == pytest.approx(pooled_map(queries, pools), abs=1e-6)
    assert results["pooled"]["map"] == pytest.approx(pooled_map(dev.targets, pools), abs=1e-6)
    assert results["pooled"]["query_map"] != results["pooled"]["map"]
    assert dev_summary({"dev": [{"step": 0, "results": results}]})["pooled_query_map"] == results["pooled"]["query_map"]


def test_pooled_map_ranks_every_languages_translations_together():
    from pyserini_kdspd.distill.dev import pooled_map
    from pyserini_kdspd.evaluate import evaluate

    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    pools = [np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.1, 0.5], [0.5, 0.6]])]
    # query 0 ranks a0 (0.9), b1 (0.5), a1 (0.2), b0 (0.1): its translations at 1 and 4; query 1: at 1 and 2
    assert pooled_map(queries, pools) == pytest.approx(((1 + 2 / 4) / 2 + 1) / 2)
    rng = np.random.default_rng(0)  # and what trec_eval says of the same ranking, on random vectors
    queries, pools = rng.normal(size=(20, 8)), [rng.normal(size=(20, 8)) for _ in range(3)]
    docs = np.concatenate(pools)
    run = {f"q{i}": {f"d{j}": float(x) for j, x in enumerate(queries[i] @ docs.T)} for i in range(20)}
    qrels = {f"q{i}": {f"d{i + 20 * k}": 1 for k in range(3)} for i in range(20)}
    assert pooled_map(queries, pools) == pytest.approx(evaluate(run, qrels, depth=None, metrics=("map",)).mean["map"])


@pytest.mark.slow
def test_cli_trains_and_writes_a_loadable_folder(python, bitext_dir, shared_data, tmp_path):
    out = tmp_path / "student"
    cmd = [python, "-m", "pyserini_kdspd.train", "--student", "spd", "--encoder", "all-MiniLM-L6-v2",
           "--teacher", "all-MiniLM-L6-v2", "--bitext", str(bitext_dir), "--output", str(out),
           "--max-steps", "2", "--batch-per-language", "2", "--decoder-layers", "1", "--prompt-length", "4",
           "--max-length", "32", "--dev-sentences", "8", "--flores", str(shared_data / "flores200" / "devtest"),
           "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fi (zero-shot)" in proc.stdout
    log = json.loads((out / "training_log.json").read_text())
    assert log["complete"] and log["steps"] == 2 and len(log["losses"]) == 2 and log["peak_rss_mb"] > 0
    assert [d["step"] for d in log["dev"]] == [0, 2]
    student = Student.from_pretrained(out)
    assert student.config.student == "spd" and student.config.languages == ["en", "de", "fr"]
    assert student.config.normalize  # the teacher L2-normalises
    assert student.config.teacher["path"] == "query_encoder"
    assert student.config.teacher["encoder_class"] == "AutoQueryEncoder"
    assert (out / "query_encoder" / "model.safetensors").is_file()
    from pyserini.encode import AutoQueryEncoder
    q = AutoQueryEncoder(str(out / "query_encoder"), pooling="mean", l2_norm=True)
    assert q.encode("hello world").shape == (384,)
    vec = student.encode(["Guten Tag"], ["de"])
    assert vec.shape == (1, 384) and abs(np.linalg.norm(vec) - 1) < 1e-4
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "reusing" in again.stdout
    # --resume with the budget already reached reuses; a larger budget extends the finished run
    same = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "reusing" in same.stdout
    longer = [c if c != "2" or cmd[i - 1] != "--max-steps" else "3" for i, c in enumerate(cmd)] + ["--resume", "--no-dev"]
    ext = subprocess.run(longer, capture_output=True, text=True, timeout=600)
    assert ext.returncode == 0 and "extending" in ext.stdout, ext.stderr[-3000:]
    log = json.loads((out / "training_log.json").read_text())
    assert log["complete"] and log["steps"] == 3 and log["resumed_from"] == [2]
    assert [s for s, _ in log["losses"]] == [1, 2, 3]
