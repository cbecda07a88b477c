"""UTSPD (the paper's Table 4) and the architecture ablations of KD-SPD on LAReQA.

    python -m pyserini_kdspd.ablations                          # every variant, 1200 steps each (the driver's)
    python -m pyserini_kdspd.ablations --variants utspd,spd-l10 --train-steps 300

Each variant changes one thing of the driver's KD-SPD (l = 30 prompts, N = 6 decoder layers, decomposed
prompts, MSE) and keeps the rest: backbone, teacher, bitext, seed, batches, precision, step budget and
KD-SPD's learning rates chosen on FLORES dev (``python -m pyserini_kdspd.sweep``). The KD-SPD and
KD-Encoder rows are the driver's ``models/kdspd`` and ``models/kd-encoder``, reused, never retrained.
Writes ``runs/lareqa/ablations.{md,json}``; ``--readme`` copies the table into the README between
``<!-- ablations:start -->`` and ``<!-- ablations:end -->`` (:mod:`.analysis.variants` does the work).
"""
from __future__ import annotations

import sys

from .analysis.variants import Variant, main as variants_main, run_table
from .train import other_vector

_OTHER = other_vector("spd")

VARIANTS = (
    Variant("KD-SPD (l=30, N=6, MSE)", "kdspd", ("--student", "spd"), driver="kdspd"),
    Variant("UTSPD (one block x 12)", "utspd", ("--student", "utspd")),
    Variant("l = 10", "spd-l10", ("--student", "spd", "--prompt-length", "10")),
    Variant("l = 60", "spd-l60", ("--student", "spd", "--prompt-length", "60")),
    Variant("N = 2", "spd-n2", ("--student", "spd", "--decoder-layers", "2")),
    Variant("full prompt per language", "spd-full", ("--student", "spd", "--prompt-kind", "full")),
    # the document vector is the driver's choice (train.RESIDUAL, chosen on FLORES dev): the other one is the ablation
    Variant(_OTHER[0], f"spd-{_OTHER[1]}", ("--student", "spd", _OTHER[2])),
    # the residual sum's branch: a d x d map from 0 instead of the gate from 0, which stays shut (StudentConfig)
    Variant("mean pooling + decoder through a linear map from 0", "spd-residual-linear",
            ("--student", "spd", "--residual", "--residual-branch", "linear")),
    Variant("no decoder (KD-Encoder)", "kd-encoder", ("--student", "mean"), driver="kd-encoder"),
)
NOTE = ("Learning rates: KD-SPD's, chosen by the FLORES dev sweep (`python -m pyserini_kdspd.sweep`), for every "
        "variant with prompts and a decoder (not swept again per variant); no decoder (KD-Encoder) has no fresh "
        "parameters and keeps its own swept rate. UTSPD applies one shared block 12 times, adding a temporal "
        "embedding after each application (paper).")


def run(s, col, command: str = "python -m pyserini_kdspd.ablations"):
    """Every variant on the driver's settings ``s`` and LAReQA ``col`` (the driver's ``--analyses ablations``)."""
    return run_table(VARIANTS, col, s, "ablations", note=NOTE, command=command)


def main(argv=None) -> int:
    return variants_main(argv, "python -m pyserini_kdspd.ablations", "ablations", VARIANTS,
                         __doc__.split("\n\n")[0], NOTE)


if __name__ == "__main__":
    sys.exit(main())
