"""Where a distillation step's time and memory go, both students side by side as the driver trains them.

    python benchmarks/train_step.py                         # this tree, 40 steps per student
    python benchmarks/train_step.py --before cea5365        # + the same measurement on an older commit
    python benchmarks/train_step.py --env ONEDNN_PRIMITIVE_CACHE_CAPACITY=16

Each student trains in its own process with one thread (the driver's layout on 2 cores) on the
full shared bitext with the default settings of ``python -m pyserini_kdspd.train``, and times
every step's phases: teacher targets (cache lookup, or a teacher forward for uncached pairs),
student forward + loss, backward, optimizer (clip, AdamW, zero_grad). Peak RSS is the process's
``ru_maxrss`` (model load, bitext, activations, optimizer state). The first ``--warmup`` steps are
not timed. ``--before REV`` checks REV out into a temporary worktree and measures it the same way;
its rows show what the default training did at that commit (for example, targets computed during
the steps). Nothing here is a test: the figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("targets", "forward", "backward", "optimizer")


def worker(student: str, steps: int, warmup: int, cache_dir: str) -> dict:
    """Train ``steps`` steps of ``student`` with the train CLI's defaults; phase seconds per timed step."""
    import resource

    import torch

    from pyserini_kdspd.distill import load_bitexts
    from pyserini_kdspd.paths import data_dir
    from pyserini_kdspd.train import _build_trainer, build_parser, run_settings

    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix=f"train-step-{student}-")
    argv = ["--student", student, "--output", out, "--max-steps", str(steps), "--no-dev", "--quiet"]
    args = build_parser().parse_args(argv + ["--cache-dir", cache_dir])
    from pyserini_kdspd import train
    if hasattr(train, "learning_rates"):  # older trees had fixed defaults
        args = train.learning_rates(args)
    bitexts = load_bitexts(data_dir(required=True) / "bitext", None, None, args.seed)
    from pyserini_kdspd.runtime import resolve
    precision = resolve(precision=args.precision).precision
    t0 = time.perf_counter()
    trainer = _build_trainer(args, Path(out), bitexts, None, precision, run_settings(args, bitexts, precision))
    setup = time.perf_counter() - t0
    from pyserini_kdspd.distill.bitext import LanguageBatchSampler

    opt, sched = trainer._optimizer()
    sampler = LanguageBatchSampler(trainer.bitexts, args.batch_per_language, args.seed)
    trainer.student.train()
    totals = dict.fromkeys(PHASES, 0.0)
    for step in range(steps):
        t = [time.perf_counter()]
        batch = trainer.make_batch(sampler.next_batch())
        t.append(time.perf_counter())
        with trainer._autocast():
            out = trainer.loss(trainer.student, batch)
            loss = getattr(out, "loss", out)  # objectives return the loss with its parts; older revisions a tensor
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], trainer.args.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        if step >= warmup:
            for k, phase in enumerate(PHASES):
                totals[phase] += t[k + 1] - t[k]
    timed = steps - warmup
    rss_now = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    return {"student": student, "setup_seconds": setup, "precomputed": getattr(trainer, "precomputed", 0),
            **{p: totals[p] / timed for p in PHASES}, "step": sum(totals.values()) / timed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_end_mb": rss_now}


def measure(tree: Path, label: str, args, env_extra: dict) -> list[dict]:
    """Both students side by side (one process each), the package imported from ``tree``."""
    from pyserini_kdspd.paths import data_dir
    # the data folder of this checkout (an older tree in a temporary worktree has no ../shared beside it)
    env = dict(os.environ, PYTHONPATH=str(tree), PYSERINI_KDSPD_DATA=str(data_dir(required=True)), **env_extra)
    # a fresh target cache unless one is given: what the first training on a new machine meets
    cache = args.cache_dir or tempfile.mkdtemp(prefix="train-step-cache-")
    procs = []
    for student in args.students:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", student, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--cache-dir", cache]
        procs.append(subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        if not args.side_by_side:
            procs[-1].wait()
    rows = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{label}: worker failed (exit {proc.returncode}):\n{err[-2000:]}")
        rows.append({"tree": label, **json.loads(out.strip().splitlines()[-1])})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--students", nargs="+", default=["spd", "mean"], choices=["spd", "utspd", "mean"])
    p.add_argument("--before", metavar="REV", default=None, help="also measure this git revision")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment of the workers")
    p.add_argument("--sequential", dest="side_by_side", action="store_false",
                   help="one student after the other instead of side by side")
    p.add_argument("--cache-dir", default=None, help="teacher-target cache (default: a fresh one per tree)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.cache_dir)), flush=True)
        return 0
    env_extra = dict(kv.split("=", 1) for kv in args.env)
    rows = []
    if args.before:
        with tempfile.TemporaryDirectory(prefix="kdspd-before-") as tmp:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", tmp, args.before], check=True,
                           capture_output=True)
            try:
                rows += measure(Path(tmp), args.before, args, env_extra)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp], capture_output=True)
    rows += measure(ROOT, "this tree", args, env_extra)
    env_note = f", env {' '.join(args.env)}" if args.env else ""
    print(f"\n{args.steps} steps per student ({args.warmup} untimed), 1 thread each, "
          f"{'side by side' if args.side_by_side else 'one after the other'}{env_note}; seconds per step\n")
    print("| tree | student | targets | forward | backward | optimizer | **step** | steps/hour | "
          "peak RSS (MB) | RSS at end (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tree']} | {r['student']} | {r['targets']:.3f} | {r['forward']:.3f} | {r['backward']:.3f} | "
              f"{r['optimizer']:.3f} | **{r['step']:.2f}** | {3600 / r['step']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['rss_end_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
