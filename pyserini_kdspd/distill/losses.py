"""Distillation losses, swappable like sentence-transformers' losses.

A loss is an ``nn.Module`` called as ``loss(student, batch)`` that returns a scalar;
it runs the student itself (tokenising the batch's texts), so a new objective
needs no change in the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import length_sorted_batches
from .bitext import ENGLISH


@dataclass
class Batch:
    """Pairs of one training step: ``texts[i]`` (language ``langs[i]``) should map to ``targets[i]``,
    the teacher's vector of its English side ``english[i]``."""

    texts: list[str]
    langs: list[str]
    english: list[str]
    targets: torch.Tensor  # (B, teacher_dim) float32

    def __len__(self) -> int:
        return len(self.texts)


def embed(student, texts: list[str], langs: list[str], max_length: int | None = None,
          chunk_size: int | None = 16) -> torch.Tensor:
    """Student vectors of ``texts`` with gradients, in input order.

    The texts run in length-sorted chunks of ``chunk_size`` (None: one padded pass).
    A KD-SPD step mixes 15 languages, and one padded pass would pad every sentence to
    the step's longest; chunking gives the same vectors and loss with less padding
    (the README's training notes give the time it saves).
    """
    lang_ids = student.lang_ids(langs)
    if not chunk_size or len(texts) <= chunk_size:
        enc = student.tokenize(texts, max_length=max_length)
        return student(enc["input_ids"], enc["attention_mask"], lang_ids)
    lengths = [len(ids) for ids in student.tokenize(texts, max_length=max_length, padding=False)["input_ids"]]
    batches = [torch.from_numpy(idx) for idx in length_sorted_batches(lengths, chunk_size)]
    outs = []
    for idx in batches:
        enc = student.tokenize([texts[i] for i in idx.tolist()], max_length=max_length)
        outs.append(student(enc["input_ids"], enc["attention_mask"], lang_ids[idx]))
    order = torch.cat(batches)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return torch.cat(outs)[inverse]


class MSELoss(nn.Module):
    """KD-SPD eq. 5: mean squared error between student(sentence in language k) and teacher(its English side).

    The mean is over all B x dim elements, as in sentence-transformers' MSELoss.
    """

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16):
        super().__init__()
        self.max_length = max_length
        self.chunk_size = chunk_size

    def forward(self, student, batch: Batch) -> torch.Tensor:
        pred = embed(student, batch.texts, batch.langs, self.max_length, self.chunk_size)
        return F.mse_loss(pred.float(), batch.targets.to(pred.device).float())


class KDEncoderLoss(MSELoss):
    """Reimers & Gurevych (2020) multilingual distillation for the KD-Encoder baseline:
    MSE(student(x_k), teacher(en)) + MSE(student(en), teacher(en)).

    The second term runs over the English sides of the non-English pairs (the
    English self-pairs of the batch are already in the first term); it is 0 for a
    batch with English pairs only.
    """

    def forward(self, student, batch: Batch) -> torch.Tensor:
        targets = batch.targets.float()
        foreign = [i for i, l in enumerate(batch.langs) if l != ENGLISH]
        texts = list(batch.texts) + [batch.english[i] for i in foreign]
        langs = list(batch.langs) + [ENGLISH] * len(foreign)
        pred = embed(student, texts, langs, self.max_length, self.chunk_size).float()
        n = len(batch)
        targets = targets.to(pred.device)
        loss = F.mse_loss(pred[:n], targets)
        if foreign:
            loss = loss + F.mse_loss(pred[n:], targets[foreign])
        return loss

