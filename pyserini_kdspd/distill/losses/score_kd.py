"""In-batch relevance-score distillation (DR.DECR's second objective, Li et al. NAACL 2022, adapted to bitext)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import QUERIES, Batch, LossOutput, Objective, no_autocast, register


def score_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows i of KL(softmax(teacher_logits[i]) || softmax(student_logits[i]))."""
    return F.kl_div(F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1), log_target=True,
                    reduction="batchmean")


@register
class ScoreKDLoss(Objective):
    """``score-kd``: the English sentences e_i, through the teacher's query encoder q, act as pseudo-queries;
    the teacher scores them against the English sides, s_T(i, j) = q(e_i) . T(e_j), the student against
    the other-language sides, s_S(i, j) = q(e_i) . S(x_j), and the loss is
    KL(softmax(s_T / t) || softmax(s_S / t)) over every j of the batch, all languages together.

    Pointwise MSE pulls each translation toward its English vector; this ranks: a Greek and a Chinese
    translation of the same sentence must score alike against every query, which is what language bias
    in a mixed-language ranking is about. ``temperature`` 0.05 suits the cosine scores of L2-normalised
    teachers (in [-1, 1]; at t = 1 the softmax over a batch is nearly flat); raise it for unnormalised ones.
    """

    name = "score-kd"
    needs = frozenset({QUERIES})

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16, temperature: float = 0.05):
        super().__init__(max_length, chunk_size)
        if not temperature > 0:
            raise ValueError(f"score-kd: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student, batch: Batch) -> LossOutput:
        pred = self.vectors(student, batch)
        queries = self.queries(batch, pred.device)
        with no_autocast(pred.device):
            teacher, student_scores = queries @ batch.targets.to(pred.device).float().T, queries @ pred.T
        loss = score_kl(teacher / self.temperature, student_scores / self.temperature)
        return LossOutput(loss, {self.name: loss})
