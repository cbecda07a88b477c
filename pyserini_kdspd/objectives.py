"""Distillation objectives compared on one student: KD-SPD trained with each ``--loss`` on LAReQA.

    python -m pyserini_kdspd.objectives                         # every objective, 1200 steps each (the driver's)
    python -m pyserini_kdspd.objectives --variants mse+score-kd --train-steps 300

Each variant is the driver's KD-SPD (l = 30, N = 6, decomposed prompts) with another objective of
:mod:`.distill.losses` and the same backbone, teacher, bitext, seed, batches, precision, step budget and
learning rates; the MSE row is the driver's ``models/kdspd``, reused, never retrained. Beside the English
questions' figures, each row gets X -> En P@1 and X -> All MAP from LAReQA's questions in every language
(:mod:`.xlingual`'s runs: non-English questions through the student). ``cl-rekd-dq``
needs English question-answer pairs that do not ship offline, so it is not in the list. Writes
``runs/lareqa/objectives.{md,json}``; ``--readme`` copies the table into the README between
``<!-- objectives:start -->`` and ``<!-- objectives:end -->`` (:mod:`.analysis.variants` does the work).
"""
from __future__ import annotations

import sys

from .analysis.variants import Variant, main as variants_main, run_table


def _loss(name: str, spec: str, slug: str) -> Variant:
    return Variant(name, slug, ("--student", "spd", "--loss", spec))


VARIANTS = (
    Variant("MSE (KD-SPD)", "kdspd", ("--student", "spd"), driver="kdspd"),
    _loss("score-kd (DR.DECR)", "score-kd", "score-kd"),
    _loss("MSE + 0.5 score-kd", "mse+score-kd:0.5", "mse+score-kd"),
    _loss("MSE + token-align (DR.DECR)", "mse+token-align", "mse+token-align"),
    _loss("CL-ReKD qq + dd", "cl-rekd-qq+cl-rekd-dd", "cl-rekd"),
    _loss("MSE + 0.5 listwise (teacher scorer)", "mse+listwise:0.5", "mse+listwise"),
)
NOTE = ("Learning rates: KD-SPD's, chosen by the FLORES dev sweep for MSE (`python -m pyserini_kdspd.sweep`), for "
        "every objective (not swept again per objective). listwise scores with the teacher's dot product (no "
        "reranker ships offline).")


def run(s, col, command: str = "python -m pyserini_kdspd.objectives"):
    """Every objective on the driver's settings ``s`` and LAReQA ``col`` (the driver's ``--analyses objectives``)."""
    return run_table(VARIANTS, col, s, "objectives", note=NOTE, command=command, cross_lingual=True)


def main(argv=None) -> int:
    return variants_main(argv, "python -m pyserini_kdspd.objectives", "objectives", VARIANTS,
                         __doc__.split("\n\n")[0], NOTE, cross_lingual=True)


if __name__ == "__main__":
    sys.exit(main())
