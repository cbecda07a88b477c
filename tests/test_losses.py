"""Distillation objectives: the ``--loss`` spec, each objective's value on a small example computed by hand
(or by its formula on vectors the student and teacher compute independently), and a gradient step that
lowers it.

Real models only: the packaged all-MiniLM-L6-v2 is the teacher and, under a 1-layer prompt decoder, the
student; sentences come from FLORES-200 devtest (one English sentence with its German, Greek and Chinese
translations), question-answer pairs from TREC DL 2020 (topics with a passage judged relevant).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_distill import tiny_student

from pyserini_kdspd.distill import Teacher
from pyserini_kdspd.distill.losses import (OBJECTIVES, Batch, CrossEncoderScorer, DocumentQuestionLoss, ListwiseKDLoss,
                                           TeacherScorer, build_loss, canonical_loss, loss_files, loss_needs,
                                           parse_loss, query_teacher, read_qa_pairs)
from pyserini_kdspd.distill.losses.cl_rekd import squared_l2
from pyserini_kdspd.distill.losses.score_kd import score_kl
from pyserini_kdspd.distill.losses.token_align import mutual_argmax, overlap_map
from pyserini_kdspd.io import FormatError

FLORES = {"en": "eng_Latn", "de": "deu_Latn", "el": "ell_Grek", "zh": "zho_Hans"}
LANGUAGES = ("en", "de", "el", "zh")


@pytest.fixture(scope="module")
def teacher():
    return Teacher("all-MiniLM-L6-v2", max_length=32, precision="fp32")


@pytest.fixture(scope="module")
def flores(shared_data):
    return {lang: (shared_data / "flores200" / "devtest" / f"{name}.devtest").read_text(encoding="utf-8").splitlines()
            for lang, name in FLORES.items()}


@pytest.fixture(scope="module")
def pairs(flores):
    """Two English sentences as self-pairs, each with its de/el/zh translations (8 pairs): a Greek and a
    Chinese translation of the same sentence share one teacher target."""
    rows = [3, 7]
    texts, langs, english = [], [], []
    for lang in LANGUAGES:
        for r in rows:
            texts.append(flores[lang][r])
            langs.append(lang)
            english.append(flores["en"][r])
    return texts, langs, english


def make_batch(teacher, pairs) -> Batch:
    """The batch the trainer would make: teacher targets and query vectors of the English sides."""
    texts, langs, english = pairs
    return Batch(list(texts), list(langs), list(english), torch.from_numpy(teacher.encode_documents(english)),
                 queries=torch.from_numpy(query_teacher(teacher).encode_documents(english)))


def student_vectors(student, texts, langs) -> torch.Tensor:
    """The student's vectors through its inference path (Student.encode), independent of the objectives'."""
    return torch.from_numpy(student.encode(texts, langs, precision="fp32"))


def descend(objective, student, batch_fn, eps=1e-2):
    """The loss before and after one normalised gradient step on the student (dropout off)."""
    student.eval()
    before = objective(student, batch_fn()).loss
    student.zero_grad()
    before.backward()
    params = [p for p in student.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert norm > 0
    with torch.no_grad():
        for p in params:
            p -= eps * p.grad / norm
        after = objective(student, batch_fn()).loss
    return float(before.detach()), float(after)


# ------------------------------------------------------------------ spec
def test_loss_specs_parse_to_a_canonical_form_and_fail_in_a_sentence(tmp_path):
    assert canonical_loss("mse") == canonical_loss("mse:1") == "mse"
    assert canonical_loss("score-kd:temperature=0.10:0.5+mse") == "score-kd:0.5:temperature=0.1+mse"
    assert [(t.name, t.weight, t.options) for t in parse_loss("mse+listwise:0.2:depth=4")] == \
        [("mse", 1.0, ()), ("listwise", 0.2, (("depth", 4),))]
    assert loss_needs("mse") == frozenset() and loss_needs("mse+score-kd:0.5") == {"queries"}
    qa = tmp_path / "qa.tsv"
    qa.write_text("what is a cat?\tA cat is a small domesticated carnivorous mammal.\n", encoding="utf-8")
    before = loss_files(f"mse+cl-rekd-dq:qa={qa}")
    assert len(before) == 1 and before[0].startswith(f"{qa} sha256:") and loss_files("mse") == []
    qa.write_text("what is a dog?\tA dog is a domesticated descendant of the wolf.\n", encoding="utf-8")
    assert loss_files(f"cl-rekd-dq:qa={qa}") != before  # same name, new content: another run
    for spec, message in [
        ("mse+foo", "unknown objective 'foo'; known: " + ", ".join(sorted(OBJECTIVES))),
        ("mse+mse:0.5", "mse appears twice; give it once with its weight"),
        ("mse:0", "mse:0: expected one weight > 0 or KEY=VALUE"),
        ("mse:0.5:2", "mse:2: expected one weight > 0 or KEY=VALUE"),
        ("score-kd:temp=1", "score-kd has no option 'temp' (options: temperature)"),
        ("listwise:depth=two", "listwise option depth='two' is not an integer"),
        ("cl-rekd-dq", "cl-rekd-dq needs qa=..."),
        ("cl-rekd-dq:qa=/nonexistent.tsv", "cl-rekd-dq qa=/nonexistent.tsv: no such file"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            parse_loss(spec)
        assert str(e.value) == f"--loss {spec!r}: {message}", spec


def test_combined_objectives_share_one_student_pass_and_weigh_their_parts(teacher, pairs):
    student = tiny_student(languages=LANGUAGES).eval()
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))
    loss = build_loss("mse+score-kd:0.5+cl-rekd-qq:0.1", max_length=32)
    assert loss.spec == "mse+score-kd:0.5+cl-rekd-qq:0.1" and loss.needs == {"queries"}
    with torch.no_grad():
        total, parts = loss(student, make_batch(teacher, pairs))
    assert len(calls) == 1  # eight texts, one chunk, one forward pass for the three objectives
    assert set(parts) == {"mse", "score-kd", "cl-rekd-qq"}
    assert float(total) == pytest.approx(float(parts["mse"] + 0.5 * parts["score-kd"] + 0.1 * parts["cl-rekd-qq"]))
    kd = build_loss("kd-encoder", max_length=32)
    with torch.no_grad():
        total, parts = kd(student, make_batch(teacher, pairs))
    assert set(parts) == {"kd-encoder/x-en", "kd-encoder/en-en"}
    assert float(total) == float(parts["kd-encoder/x-en"] + parts["kd-encoder/en-en"])


# ------------------------------------------------------------------ score-kd
def test_score_kl_on_a_hand_computed_example():
    # row 1: teacher softmax (1/4, 3/4), student (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2); row 2 agrees: 0
    teacher = torch.tensor([[0.0, math.log(3)], [1.0, 2.0]])
    student = torch.tensor([[0.0, 0.0], [5.0, 6.0]])
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert float(score_kl(teacher, student)) == pytest.approx(expected, rel=1e-6)


def test_score_kd_is_the_in_batch_kl_across_languages_and_its_gradient_lowers_it(teacher, pairs):
    student = tiny_student(languages=LANGUAGES)
    objective = build_loss("score-kd:temperature=0.1", max_length=32)
    batch = make_batch(teacher, pairs)
    batch.queries = batch.queries.roll(1, 0)  # MiniLM encodes queries as documents: make them differ here
    student.eval()
    with torch.no_grad():
        got = float(objective(student, batch).loss)
    s = student_vectors(student, *pairs[:2])
    q, t = batch.queries, batch.targets
    # the teacher gives a Greek and a Chinese translation of one sentence the same score against every query
    el, zh = pairs[1].index("el"), pairs[1].index("zh")
    assert torch.equal(q @ t[el], q @ t[zh])
    assert got == pytest.approx(float(score_kl(q @ t.T / 0.1, q @ s.T / 0.1)), rel=1e-4)
    before, after = descend(objective, student, lambda: make_batch(teacher, pairs))
    assert after < before


# ------------------------------------------------------------------ CL-ReKD
def test_squared_l2_on_a_hand_computed_example():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert float(squared_l2(a, b)) == 2.5  # (1 + 4) / 2: summed over dimensions, averaged over rows


@pytest.mark.parametrize("name", ["cl-rekd-qq", "cl-rekd-dd"])
def test_cl_rekd_bitext_objectives_and_their_gradient(teacher, pairs, name):
    student = tiny_student(languages=LANGUAGES)
    objective = build_loss(name, max_length=32)
    batch = make_batch(teacher, pairs)
    batch.queries = batch.queries.roll(1, 0)  # MiniLM encodes queries as documents: make them differ here
    texts, langs, english = pairs
    student.eval()
    with torch.no_grad():
        got = float(objective(student, batch).loss)
    if name == "cl-rekd-qq":  # S(x) against the teacher's query vector of e
        expected = ((student_vectors(student, texts, langs) - batch.queries) ** 2).sum(1).mean()
    else:  # S(e) against T(e), on every pair's English side
        expected = ((student_vectors(student, english, ["en"] * len(english)) - batch.targets) ** 2).sum(1).mean()
    assert got == pytest.approx(float(expected), rel=1e-4)
    before, after = descend(objective, student, lambda: make_batch(teacher, pairs))
    assert after < before


@pytest.fixture(scope="module")
def qa_files(shared_data, tmp_path_factory):
    """English question-answer pairs in the three formats read_qa_pairs takes, from TREC DL 2020: each judged
    topic with its first BM25 hit judged highly relevant (grade 3)."""
    d = shared_data / "trec-dl20"
    grade3 = {(q, doc) for q, _, doc, grade in (line.split() for line in
                                                (d / "qrels.dl20-passage.txt").read_text().splitlines())
              if grade == "3"}
    pairs = []
    for entry in json.loads((d / "retrieve_results_dl20.json").read_text(encoding="utf-8")):
        hit = next((h for h in entry["hits"] if (str(h["qid"]), h["docid"]) in grade3), None)
        if hit is not None:
            pairs.append((entry["query"], hit["content"]))
    pairs = pairs[:12]
    folder = tmp_path_factory.mktemp("qa")
    (folder / "qa.tsv").write_text("".join(f"{q}\t{a}\n" for q, a in pairs), encoding="utf-8")
    (folder / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs),
                                     encoding="utf-8")
    (folder / "dpr.jsonl").write_text("".join(json.dumps({"question": q, "answers": [], "positive_ctxs": [
        {"title": "", "text": a}], "negative_ctxs": []}) + "\n" for q, a in pairs), encoding="utf-8")
    return folder, pairs


def test_qa_pairs_read_from_tsv_jsonl_and_dpr_records(qa_files, tmp_path):
    folder, pairs = qa_files
    assert len(pairs) == 12
    expected = ([q for q, _ in pairs], [a for _, a in pairs])
    for name in ("qa.tsv", "qa.jsonl", "dpr.jsonl"):
        assert read_qa_pairs(folder / name) == expected, name
    for name, content, message in [
        ("bad.tsv", "what is a cat?\tA small mammal.\nno answer here\n", "bad.tsv:2: expected 'question<TAB>answer'"),
        ("bad.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q", "positive_ctxs": []}\n',
         'bad.jsonl:2: expected {"question"'),
        ("empty.tsv", "\n", "empty.tsv: no question-answer pairs"),
    ]:
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(FormatError) as e:
            read_qa_pairs(tmp_path / name)
        assert message in str(e.value)


def test_cl_rekd_question_document_on_qa_pairs(teacher, pairs, qa_files, tmp_path):
    folder, qa = qa_files
    objective = build_loss(f"cl-rekd-dq:qa={folder / 'qa.tsv'}:pairs=5", max_length=32)
    assert isinstance(objective, DocumentQuestionLoss)
    objective.bind(teacher, tmp_path, seed=3)
    # the pairs of a step depend on the step alone (a resumed run draws the same); an epoch visits every pair once
    drawn = [objective.rows(s) for s in (0, 1, 2, 3, 4)]
    assert objective.rows(2) == drawn[2] and objective.rows(0) == drawn[0]
    assert sorted(drawn[0] + drawn[1] + drawn[2][:2]) == list(range(12))
    student = tiny_student(languages=LANGUAGES).eval()
    batch = make_batch(teacher, pairs)
    batch.step = 1
    with torch.no_grad():
        got = float(objective(student, batch).loss)
    rows = drawn[1]
    s = student_vectors(student, [qa[i][0] for i in rows], "en")
    t = torch.from_numpy(teacher.encode_documents([qa[i][1] for i in rows]))
    assert got == pytest.approx(float(((s - t) ** 2).sum(1).mean()), rel=1e-4)
    assert list((tmp_path / "teacher_targets" / teacher.fingerprint).glob("qa-*.npy"))  # answers cached per row

    def step_one():
        b = make_batch(teacher, pairs)
        b.step = 1
        return b
    before, after = descend(objective, student, step_one)
    assert after < before


# ------------------------------------------------------------------ listwise
def test_teacher_scorer_is_the_teachers_dot_product(teacher, pairs):
    texts = pairs[0]
    scores = TeacherScorer(teacher).score([texts[0], texts[0], texts[1]], texts[2:5])  # a query scored twice
    vectors = teacher.encode_documents(texts[:5])
    np.testing.assert_allclose(scores.numpy(), (vectors[[0, 0, 1]] * vectors[2:5]).sum(1), rtol=1e-6)


def test_listwise_kl_over_retrieved_candidates_and_its_gradient(teacher, pairs):
    student = tiny_student(languages=LANGUAGES)
    batch = make_batch(teacher, pairs)
    everything = build_loss(f"listwise:depth={len(batch)}", max_length=32)
    top2 = build_loss("listwise:depth=2:temperature=0.1", max_length=32)
    for objective in (everything, top2):
        objective.bind(teacher)
    student.eval()
    with torch.no_grad():
        # with every document a candidate, the teacher-dot scorer is score-kd at the same temperature
        assert float(everything(student, batch).loss) == pytest.approx(
            float(build_loss("score-kd", max_length=32)(student, batch).loss), rel=1e-4)
        got = float(top2(student, batch).loss)
    s, q, t = student_vectors(student, *pairs[:2]), batch.queries, batch.targets
    expected = 0.0
    for i in range(len(batch)):  # the teacher retrieves each query's two best documents; KL over those two
        top = torch.topk(q[i] @ t.T, 2).indices
        p = torch.softmax(q[i] @ t[top].T / 0.05, 0)
        log_r = torch.log_softmax(q[i] @ s[top].T / 0.1, 0)
        expected += float((p * (p.log() - log_r)).sum()) / len(batch)
    assert got == pytest.approx(expected, rel=1e-4)
    before, after = descend(top2, student, lambda: make_batch(teacher, pairs))
    assert after < before


def test_cross_encoder_scorer_scores_pairs_whatever_the_batching(teacher, pairs):
    """No cross-encoder's weights ship offline: MiniLM with a fresh one-logit head runs the same code path."""
    scorer = CrossEncoderScorer(teacher.path, max_length=32, batch_size=3)
    texts, _, english = pairs
    scores = scorer.score(english, texts)
    assert scores.shape == (len(texts),) and scorer.temperature == 1.0
    scorer.batch_size = 64  # one padded batch instead of three
    torch.testing.assert_close(scores, scorer.score(english, texts), rtol=1e-4, atol=1e-5)
    listwise = ListwiseKDLoss(max_length=32, scorer=teacher.path, depth=3)
    listwise.bind(teacher)
    assert isinstance(listwise.scorer, CrossEncoderScorer)


# ------------------------------------------------------------------ token alignment
def test_alignment_pieces_on_hand_computed_examples():
    similarity = torch.tensor([[0.9, 0.1, 0.0],
                               [0.8, 0.2, 0.1],   # prefers column 0, which prefers row 0: not aligned
                               [0.0, 0.3, 0.7]])
    assert mutual_argmax(similarity) == [(0, 0), (2, 2)]
    # "unbelievable": un|believ|able against unbeliev|able; a special token's (0, 0) maps to nothing
    assert overlap_map([(0, 2), (2, 8), (8, 12), (0, 0)], [(0, 0), (0, 8), (8, 12)]) == [1, 1, 2, None]


def test_token_alignment_is_zero_where_student_and_teacher_are_one_model_and_its_gradient(teacher, pairs):
    """A MiniLM student and a MiniLM teacher agree on an English sentence posing as German: every token aligns
    to itself and the states are the teacher's, so the loss is 0; on real translations it is not, and a
    gradient step lowers it."""
    student = tiny_student(languages=LANGUAGES).eval()
    objective = build_loss("token-align", max_length=32)
    objective.bind(teacher)
    texts, langs, english = pairs
    posing = Batch(english[:2], ["de", "de"], english[:2], torch.zeros(2, teacher.dim))
    with torch.no_grad():
        assert float(objective(student, posing).loss) == pytest.approx(0.0, abs=1e-10)
    before, after = descend(objective, student, lambda: make_batch(teacher, pairs))
    assert before > 0.01 and after < before
