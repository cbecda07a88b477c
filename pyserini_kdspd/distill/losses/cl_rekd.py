"""Cross-lingual consistency: CL-ReKD's three objectives (ACL ARR 2022), as squared L2 distances.

The student here encodes documents and the teacher's query encoder encodes queries, so the bitext
plays both roles: an English sentence e is a question to the teacher's query encoder q and a
document to its document encoder T.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...io import FormatError, _json_records, text_lines
from ..bitext import ENGLISH, texts_key
from ..teacher import TargetCache, Teacher
from .base import QUERIES, Batch, LossOutput, Objective, embed, no_autocast, register


def squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ||a_i - b_i||^2 (summed over dimensions, unlike MSE's mean)."""
    return (a - b).pow(2).sum(-1).mean()


@register
class QuestionQuestionLoss(Objective):
    """``cl-rekd-qq`` (objective 1): ||S(x) - q(e)||^2, the student's vector of a sentence in language k to
    the teacher's query vector of its English side (bitext; English self-pairs included)."""

    name = "cl-rekd-qq"
    needs = frozenset({QUERIES})

    def forward(self, student, batch: Batch) -> LossOutput:
        pred = self.vectors(student, batch)
        loss = squared_l2(pred, self.queries(batch, pred.device))
        return LossOutput(loss, {self.name: loss})


@register
class DocumentDocumentLoss(Objective):
    """``cl-rekd-dd`` (objective 2): ||S(e) - T(e)||^2 on the English sides, which keeps the student's English
    where the teacher puts it while the other languages move."""

    name = "cl-rekd-dd"

    def forward(self, student, batch: Batch) -> LossOutput:
        english = self.vectors(student, batch, english=True)
        loss = squared_l2(english, batch.targets.to(english.device).float())
        return LossOutput(loss, {self.name: loss})


def read_qa_pairs(path) -> tuple[list[str], list[str]]:
    """English (questions, answers) from a file the user gives.

    ``.tsv`` (or any other name): ``question<TAB>answer`` per line. ``.jsonl`` / ``.json`` (JSON lines):
    ``{"question": ..., "answer": "..."}``, or DPR's training records
    ``{"question": ..., "positive_ctxs": [{"text": ...}, ...]}`` (the first positive). Anything else is a
    :class:`~pyserini_kdspd.io.FormatError` naming the file and line.
    """
    path = Path(path)
    questions, answers = [], []
    if {".jsonl", ".json"} & set(path.suffixes):
        for lineno, record in _json_records(path):
            answer = record.get("answer")
            if answer is None and record.get("positive_ctxs"):
                answer = record["positive_ctxs"][0].get("text") if isinstance(record["positive_ctxs"][0], dict) \
                    else None
            question = record.get("question")
            if not (isinstance(question, str) and question.strip() and isinstance(answer, str) and answer.strip()):
                raise FormatError(path, lineno, 'expected {"question": "...", "answer": "..."} or DPR\'s '
                                                '{"question": "...", "positive_ctxs": [{"text": "..."}]}')
            questions.append(question.strip())
            answers.append(answer.strip())
    else:
        for lineno, line in text_lines(path):
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise FormatError(path, lineno, f"expected 'question<TAB>answer', got {line[:80]!r}")
            questions.append(parts[0].strip())
            answers.append(parts[1].strip())
    if not questions:
        raise FormatError(path, None, "no question-answer pairs")
    return questions, answers


@register
class DocumentQuestionLoss(Objective):
    """``cl-rekd-dq`` (objective 3): ||S(q) - T(d)||^2 for English question-answer pairs read from ``qa``
    (:func:`read_qa_pairs`), ``pairs`` of them per step: the student's vector of a question to the teacher's
    vector of its answer.

    The pairs of step s are the next ``pairs`` of a seeded shuffle (reshuffled each epoch) at position
    s x ``pairs``: a resumed run draws what an uninterrupted one would. The teacher's answer vectors are
    computed when a step first needs them and cached on disk per row (one file per QA file content).
    """

    name = "cl-rekd-dq"
    files = ("qa",)

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16, *, qa: str, pairs: int = 8):
        super().__init__(max_length, chunk_size)
        if pairs < 1:
            raise ValueError(f"cl-rekd-dq: pairs must be >= 1, got {pairs}")
        self.questions, self.answers = read_qa_pairs(qa)
        self.pairs = pairs
        self.cache: TargetCache | None = None
        self.seed = 42
        self._perm: tuple[int, np.ndarray] | None = None

    def bind(self, teacher: Teacher, cache_dir=None, seed: int = 42) -> None:
        self.cache = TargetCache(teacher, self.answers, f"qa-{texts_key(self.answers)}", cache_dir)
        self.seed = seed

    def rows(self, step: int) -> list[int]:
        """The QA rows of a 0-based training step."""
        n, rows = len(self.questions), []
        for position in range(step * self.pairs, (step + 1) * self.pairs):
            epoch, offset = divmod(position, n)
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
            rows.append(int(self._perm[1][offset]))
        return rows

    def forward(self, student, batch: Batch) -> LossOutput:
        if self.cache is None:
            raise RuntimeError("cl-rekd-dq: bind(teacher) first (DistillationTrainer does)")
        rows = self.rows(batch.step)
        pred = embed(student, [self.questions[i] for i in rows], [ENGLISH] * len(rows), self.max_length,
                     self.chunk_size).float()
        with no_autocast(pred.device):
            answers = torch.from_numpy(self.cache.get(rows)).to(pred.device)
        loss = squared_l2(pred, answers)
        return LossOutput(loss, {self.name: loss})
