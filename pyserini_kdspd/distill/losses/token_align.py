"""Token-alignment representation distillation (DR.DECR's first objective, Li et al. NAACL 2022).

The student's backbone states of the tokens of x are pulled toward the teacher's states of the English
tokens they align to. The alignment is the backbone's own, as in the paper: mutual argmax of the cosine
similarity between its states of x and of e (no gradient through it), SimAlign's "argmax"; the student's
tokens of e then map to the teacher's tokens of e through character offsets, since the two tokenizers
cut e differently.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...runtime import autocast
from ..teacher import Teacher
from .base import Batch, LossOutput, Objective, no_autocast, register


def mutual_argmax(similarity: torch.Tensor) -> list[tuple[int, int]]:
    """``(i, j)`` where j is row i's best column and i is column j's best row (SimAlign's argmax alignment)."""
    if similarity.numel() == 0:
        return []
    best_col, best_row = similarity.argmax(1), similarity.argmax(0)
    return [(i, int(j)) for i, j in enumerate(best_col.tolist()) if int(best_row[j]) == i]


def overlap_map(source: Sequence[tuple[int, int]], target: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each source character span, the target span that overlaps it most (None: no overlap, or an empty
    span such as a special token's)."""
    out: list[int | None] = []
    for a, b in source:
        best, best_overlap = None, 0
        for k, (c, d) in enumerate(target):
            overlap = min(b, d) - max(a, c)
            if c < d and overlap > best_overlap:
                best, best_overlap = k, overlap
        out.append(best if a < b else None)
    return out


def _spans(tokenizer, texts: list[str], prefix: str, max_length: int | None):
    """Token ids, mask and character spans within the unprefixed text ((0, 0) for special and prefix tokens)."""
    enc = tokenizer([prefix + t for t in texts], max_length=max_length, truncation=True, padding=True,
                    return_offsets_mapping=True, return_tensors="pt")
    spans = [[(a - len(prefix), b - len(prefix)) if a >= len(prefix) and b > a else (0, 0) for a, b in row]
             for row in enc.pop("offset_mapping").tolist()]
    return enc, spans


@register
class TokenAlignmentLoss(Objective):
    """``token-align``: MSE between the student backbone's states of the non-English tokens and the teacher's
    states of the English tokens they align to, over every aligned token of the batch's non-English pairs.

    Needs the teacher's token states, which no cache holds (a pair's states are a token-by-dimension
    matrix): they are computed during the step, as are the backbone's states used for the alignment, and
    the student's encoder runs once more on x for the states that get the gradient. The student's
    ``projection`` (when the teacher is wider) maps its states into the teacher's size.
    """

    name = "token-align"

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16):
        super().__init__(max_length, chunk_size)
        self.teacher: Teacher | None = None

    def bind(self, teacher: Teacher, cache_dir=None, seed: int = 42) -> None:
        if not hasattr(teacher.encoder, "tokenizer") or not hasattr(teacher.encoder, "model"):
            raise ValueError(f"token-align: teacher {teacher.name} exposes no tokenizer and model to read token "
                             f"states from")
        self.teacher = teacher

    def forward(self, student, batch: Batch) -> LossOutput:
        if self.teacher is None:
            raise RuntimeError("token-align: bind(teacher) first (DistillationTrainer does)")
        foreign = batch.foreign()
        xs, es = [batch.texts[i] for i in foreign], [batch.english[i] for i in foreign]
        zero = torch.zeros((), requires_grad=True)  # a batch without aligned tokens
        if not foreign:
            return LossOutput(zero, {self.name: zero})
        prefix = student.config.passage_prefix
        max_length = student.effective_max_length(self.max_length)
        enc_x, spans_x = _spans(student.tokenizer, xs, prefix, max_length)
        enc_e, spans_e = _spans(student.tokenizer, es, prefix, max_length)
        teacher_prefix = f"{self.teacher.encoder.prefix} " if getattr(self.teacher.encoder, "prefix", None) else ""
        enc_t, spans_t = _spans(self.teacher.encoder.tokenizer, es, teacher_prefix, self.teacher.max_length)
        enc_t.pop("token_type_ids", None)
        hidden_x = student.encoder(**enc_x).last_hidden_state
        student_x = student.projection(hidden_x) if student.projection is not None else hidden_x
        with torch.no_grad():
            backbone_x = hidden_x.float()
            backbone_e = student.encoder(**enc_e).last_hidden_state.float()
            with no_autocast(self.teacher.device), autocast(self.teacher.precision, self.teacher.device):
                teacher_e = self.teacher.encoder.model(**enc_t)[0].float()
        if student_x.shape[-1] != teacher_e.shape[-1]:
            raise ValueError(f"token-align: student token states have {student_x.shape[-1]} dimensions, the "
                             f"teacher's {teacher_e.shape[-1]}")
        rows, cols, targets = [], [], []
        for k in range(len(foreign)):
            keep_x = [i for i, (a, b) in enumerate(spans_x[k]) if b > a]
            keep_e = [j for j, (a, b) in enumerate(spans_e[k]) if b > a]
            sim = F.normalize(backbone_x[k, keep_x], dim=-1) @ F.normalize(backbone_e[k, keep_e], dim=-1).T
            to_teacher = overlap_map([spans_e[k][j] for j in keep_e], spans_t[k])
            for i, j in mutual_argmax(sim):
                if to_teacher[j] is not None:
                    rows.append(k)
                    cols.append(keep_x[i])
                    targets.append(teacher_e[k, to_teacher[j]])
        if not targets:
            return LossOutput(zero, {self.name: zero})
        loss = F.mse_loss(student_x[rows, cols].float(), torch.stack(targets))
        return LossOutput(loss, {self.name: loss})

