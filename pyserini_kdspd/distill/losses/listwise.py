"""Listwise distillation of a reranker into the student over retrieved candidates (QuiCK, arXiv 2303.14991).

QuiCK distils a query generator and a cross-encoder reranker into a dual encoder. Here any
:class:`Scorer` (a cross-encoder, a generator's log-likelihood, ...) scores the candidates; the one
that runs offline is the teacher's own dot product (:class:`TeacherScorer`), a stand-in: no reranker's
weights ship in a package.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

from ...models import resolve_model
from ..teacher import Teacher
from .base import QUERIES, Batch, LossOutput, Objective, no_autocast, query_teacher, register
from .score_kd import score_kl


class Scorer(Protocol):
    """Relevance of (query, document) pairs; ``temperature`` scales its scores into softmax logits."""

    temperature: float

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """(n,) float32 scores, one per pair (queries[i], documents[i])."""


class TeacherScorer:
    """The teacher's dense score q(query) . T(document): a stand-in reranker that runs offline."""

    temperature = 0.05  # as score-kd's: cosine scores in [-1, 1]

    def __init__(self, teacher: Teacher):
        self.documents, self.queries = teacher, query_teacher(teacher)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        q, d = _encode_unique(self.queries, queries), _encode_unique(self.documents, documents)
        return torch.from_numpy(np.einsum("nd,nd->n", q, d))


def _encode_unique(teacher: Teacher, texts: Sequence[str]) -> np.ndarray:
    """Teacher vectors of ``texts``, each distinct text encoded once (a query recurs for each of its candidates)."""
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    return teacher.encode_documents(unique)[[index[t] for t in texts]]


class CrossEncoderScorer:
    """A cross-encoder reranker from Hugging Face (``AutoModelForSequenceClassification`` over the pair), e.g.
    ``cross-encoder/ms-marco-MiniLM-L-6-v2``: its relevance logit, or the log-probability of the last label
    ("relevant") for a two-label head such as monoBERT's."""

    temperature = 1.0  # logits

    def __init__(self, name: str, max_length: int = 256, batch_size: int = 64, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.max_length, self.batch_size, self.device = max_length, batch_size, device

    @torch.inference_mode()
    def score(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        out = []
        for s in range(0, len(queries), self.batch_size):
            enc = self.tokenizer(list(queries[s:s + self.batch_size]), list(documents[s:s + self.batch_size]),
                                 truncation=True, padding=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits.float()
            out.append(logits[:, 0] if logits.shape[-1] == 1 else logits.log_softmax(-1)[:, -1])
        return torch.cat(out).cpu()


@register
class ListwiseKDLoss(Objective):
    """``listwise``: each English side e_i, through the teacher's query encoder, retrieves the ``depth``
    best of the batch's documents by the teacher's dense score; the scorer reranks them (English query
    against each candidate's English side), and the student's scores q(e_i) . S(x_j) over the same
    candidates are distilled with KL(softmax(scorer / t_scorer) || softmax(student / ``temperature``)).

    ``scorer`` is ``teacher`` (:class:`TeacherScorer`, the offline stand-in) or a cross-encoder's Hugging
    Face id or folder (:class:`CrossEncoderScorer`). The scorer runs during the step (candidates depend
    on the batch); its scores are not cached.
    """

    name = "listwise"
    needs = frozenset({QUERIES})

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16, scorer: str = "teacher",
                 depth: int = 8, temperature: float = 0.05):
        super().__init__(max_length, chunk_size)
        if depth < 2 or not temperature > 0:
            raise ValueError(f"listwise: depth must be >= 2 and temperature > 0, got {depth} and {temperature}")
        self.scorer_name, self.depth, self.temperature = scorer, depth, temperature
        self.scorer: Scorer | None = None

    def bind(self, teacher: Teacher, cache_dir=None, seed: int = 42) -> None:
        if self.scorer is None:
            self.scorer = TeacherScorer(teacher) if self.scorer_name == "teacher" else \
                CrossEncoderScorer(self.scorer_name, device=teacher.device)

    def forward(self, student, batch: Batch) -> LossOutput:
        if self.scorer is None:
            raise RuntimeError("listwise: bind(teacher) first (DistillationTrainer does), or set .scorer")
        pred = self.vectors(student, batch)
        queries = self.queries(batch, pred.device)
        with torch.no_grad(), no_autocast(pred.device):  # the teacher retrieves the candidates; the scorer reranks
            candidates = (queries @ batch.targets.to(pred.device).float().T).topk(min(self.depth, len(batch))).indices
            rows = torch.arange(len(batch)).repeat_interleave(candidates.shape[1]).tolist()
            scores = self.scorer.score([batch.english[i] for i in rows],
                                       [batch.english[j] for j in candidates.flatten().tolist()])
        reranker = scores.to(pred.device).view_as(candidates) / self.scorer.temperature
        student_scores = (queries.unsqueeze(1) * pred[candidates]).sum(-1) / self.temperature
        loss = score_kl(reranker, student_scores)
        return LossOutput(loss, {self.name: loss})
