"""How much of its nominal step Adam gives each part of a student, read from a training checkpoint.

    python -m pyserini_kdspd.distill.adam models/kdspd            # its latest checkpoint
    python -m pyserini_kdspd.distill.adam models/kdspd/checkpoints/step-0000100

Adam moves a parameter by lr * m / (sqrt(v) + eps). Where the gradients' RMS sqrt(v) is far below eps, the
step shrinks by sqrt(v) / (sqrt(v) + eps) and Adam degrades to momentum SGD with a tiny rate. The paper's MSE is
a mean over B x d elements of unit vectors, so its gradients are small, and a residual student's prompts and
decoder see them scaled once more by their gate; this table shows where that bites (train ``--adam-eps``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARTS = ("encoder.embeddings", "encoder.layers", "prompts", "decoder", "gate", "branch", "projection")


def part_of(name: str) -> str:
    """The row of the table a parameter belongs to."""
    if name.startswith("encoder."):
        return "encoder.embeddings" if ".embeddings." in name else "encoder.layers"
    return name.split(".")[0]


def adam_table(checkpoint: str | Path) -> tuple[int, float, list[dict]]:
    """(step, Adam's eps, one row per part): elements, the share that never had a gradient (v = 0: an embedding
    row never seen, say), and over the others the median sqrt(v), the share with sqrt(v) < eps and the median step
    shrink sqrt(v) / (sqrt(v) + eps) (1: Adam's full step)."""
    import torch

    path = Path(checkpoint)
    if path.is_dir() and (path / "checkpoints").is_dir():
        from .trainer import latest_checkpoint
        path = latest_checkpoint(path) or path
    if path.is_dir():
        path = path / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint}: no training checkpoint (a folder with checkpoints/ or a state.pt)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    names = state.get("param_names")
    if names is None:
        raise ValueError(f"{path}: checkpoint written before the trainer recorded parameter names; "
                         "train again (or --resume a run) to get one")
    opt = state["optimizer"]
    index = [i for group in opt["param_groups"] for i in group["params"]]
    eps = {i: group["eps"] for group in opt["param_groups"] for i in group["params"]}
    if len(index) != len(names):
        raise ValueError(f"{path}: {len(names)} parameter names for {len(index)} optimizer entries")
    rms: dict[str, list] = {}    # per part: sqrt(v) of every element, and the eps its group divides by
    floor: dict[str, list] = {}
    for name, i in zip(names, index):
        moments = opt["state"].get(i)
        if moments is None:  # never stepped
            continue
        r = moments["exp_avg_sq"].float().sqrt().flatten()
        rms.setdefault(part_of(name), []).append(r)
        floor.setdefault(part_of(name), []).append(torch.full_like(r, eps[i]))
    rows = []
    for part in sorted(rms, key=lambda p: PARTS.index(p) if p in PARTS else len(PARTS)):
        r, e = torch.cat(rms[part]), torch.cat(floor[part])
        stepped = r > 0
        r, e = r[stepped], e[stepped]
        some = r.numel() > 0
        rows.append({"part": part, "elements": int(stepped.numel()), "no_gradient": float(1 - stepped.float().mean()),
                     "median_rms": float(r.median()) if some else 0.0,
                     "share_below_eps": float((r < e).float().mean()) if some else 0.0,
                     "median_shrink": float((r / (r + e)).median()) if some else 0.0})
    return int(state["step"]), max(eps.values()), rows


def markdown(step: int, eps: float, rows: list[dict]) -> str:
    lines = [f"Adam's second moments at step {step} (eps {eps:g}):", "",
             "| part | elements | no gradient yet | median sqrt(v) | sqrt(v) < eps | median step shrink |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['part']} | {r['elements']:,} | {r['no_gradient']:.1%} | {r['median_rms']:.2e} | "
              f"{r['share_below_eps']:.1%} | {r['median_shrink']:.3f} |" for r in rows]
    lines += ["", "Over the elements that had a gradient; step shrink = sqrt(v) / (sqrt(v) + eps), 1: Adam's full "
              "step."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.distill.adam", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a student folder (its latest checkpoint) or a checkpoints/step-N folder")
    args = p.parse_args(argv)
    from .._cli import run_cli

    def show() -> int:
        print(markdown(*adam_table(args.checkpoint)), end="")
        return 0
    return run_cli(show)


if __name__ == "__main__":
    sys.exit(main())
