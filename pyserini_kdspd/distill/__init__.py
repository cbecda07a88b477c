"""Knowledge distillation of a KD-SPD student from an English teacher (paper section 3.3).

bitext (en-XX.tsv) -> :class:`LanguageBatchSampler` (B pairs per language, English
self-pairs included) -> :class:`Teacher` targets (cached on disk) -> a loss
(:class:`MSELoss`, eq. 5, or :class:`KDEncoderLoss`) -> :class:`DistillationTrainer`
(AdamW, warmup, exact resume) -> a student folder with ``query_encoder/``;
:class:`DevEvaluator` scores FLORES-200 devtest along the way.
"""
from .bitext import Bitext, Example, LanguageBatchSampler, find_bitext_files, load_bitexts, read_bitext
from .dev import FLORES_TO_ISO, DevEvaluator, markdown_table, read_flores
from .losses import Batch, KDEncoderLoss, MSELoss
from .teacher import DEFAULT_TEACHER, TargetCache, Teacher
from .trainer import DistillationTrainer, Interrupted, TrainingArguments, is_complete, latest_checkpoint

__all__ = [
    "Bitext", "Example", "LanguageBatchSampler", "find_bitext_files", "load_bitexts", "read_bitext",
    "FLORES_TO_ISO", "DevEvaluator", "markdown_table", "read_flores",
    "Batch", "KDEncoderLoss", "MSELoss",
    "DEFAULT_TEACHER", "TargetCache", "Teacher",
    "DistillationTrainer", "Interrupted", "TrainingArguments", "is_complete", "latest_checkpoint",
]
