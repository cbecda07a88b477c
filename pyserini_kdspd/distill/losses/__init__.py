"""Distillation objectives, swappable like sentence-transformers' losses and selected by name on the CLI.

Every objective has one call shape, ``objective(student, batch) -> LossOutput(loss, parts)``
(:mod:`.base`), and a name in :data:`OBJECTIVES`; ``--loss`` specs (:mod:`.spec`) combine them with
weights, e.g. ``mse+score-kd:0.5``:

=================  ===========================================================================
``mse``            KD-SPD eq. 5 (:class:`MSELoss`)
``kd-encoder``     Reimers & Gurevych's two MSE terms (:class:`KDEncoderLoss`)
``score-kd``       DR.DECR's in-batch relevance-score KL (:class:`ScoreKDLoss`)
``cl-rekd-qq``     CL-ReKD objective 1, question-question (:class:`QuestionQuestionLoss`)
``cl-rekd-dd``     CL-ReKD objective 2, document-document (:class:`DocumentDocumentLoss`)
``cl-rekd-dq``     CL-ReKD objective 3, on English QA pairs (:class:`DocumentQuestionLoss`)
``listwise``       QuiCK's listwise KL from a reranker over retrieved candidates (:class:`ListwiseKDLoss`)
``token-align``    DR.DECR's token-alignment representation distillation (:class:`TokenAlignmentLoss`)
=================  ===========================================================================
"""
from .base import OBJECTIVES, QUERIES, Batch, LossOutput, Objective, embed, query_teacher, register
# imported in the table's order, which is the order they register in and `train --help` lists them
from .mse import KDEncoderLoss, MSELoss  # noqa: I001
from .score_kd import ScoreKDLoss
from .cl_rekd import DocumentDocumentLoss, DocumentQuestionLoss, QuestionQuestionLoss, read_qa_pairs
from .listwise import CrossEncoderScorer, ListwiseKDLoss, Scorer, TeacherScorer
from .token_align import TokenAlignmentLoss
from .spec import WeightedSum, build_loss, canonical_loss, loss_files, loss_needs, parse_loss

__all__ = [
    "OBJECTIVES", "QUERIES", "Batch", "LossOutput", "Objective", "embed", "query_teacher", "register",
    "DocumentDocumentLoss", "DocumentQuestionLoss", "QuestionQuestionLoss", "read_qa_pairs",
    "CrossEncoderScorer", "ListwiseKDLoss", "Scorer", "TeacherScorer", "TokenAlignmentLoss",
    "KDEncoderLoss", "MSELoss", "ScoreKDLoss",
    "WeightedSum", "build_loss", "canonical_loss", "loss_files", "loss_needs", "parse_loss",
]
