"""The two objectives the paper's students train with (the defaults of ``train``)."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Batch, LossOutput, Objective, register


@register
class MSELoss(Objective):
    """``mse``: KD-SPD eq. 5, mean squared error between student(sentence in language k) and teacher(its English
    side), English self-pairs included.

    The mean is over all B x dim elements, as in sentence-transformers' MSELoss.
    """

    name = "mse"

    def forward(self, student, batch: Batch) -> LossOutput:
        pred = self.vectors(student, batch)
        loss = F.mse_loss(pred, batch.targets.to(pred.device).float())
        return LossOutput(loss, {self.name: loss})


@register
class KDEncoderLoss(Objective):
    """``kd-encoder``: Reimers & Gurevych (2020) multilingual distillation for the KD-Encoder baseline,
    MSE(student(x_k), teacher(en)) + MSE(student(en), teacher(en)) (parts ``x-en`` and ``en-en``).

    The second term runs over the English sides of the non-English pairs (the English self-pairs of
    the batch are already in the first term); it is 0 for a batch with English pairs only.
    """

    name = "kd-encoder"

    def forward(self, student, batch: Batch) -> LossOutput:
        english = self.vectors(student, batch, english=True)  # first: x and en in one length-sorted pass
        pred = self.vectors(student, batch)
        targets = batch.targets.to(pred.device).float()
        foreign = batch.foreign()
        x_en = F.mse_loss(pred, targets)
        parts = {f"{self.name}/x-en": x_en}
        loss = x_en
        if foreign:
            parts[f"{self.name}/en-en"] = F.mse_loss(english[foreign], targets[foreign])
            loss = loss + parts[f"{self.name}/en-en"]
        return LossOutput(loss, parts)
