"""Distil an English teacher into a KD-SPD (or KD-Encoder) student.

    python -m pyserini_kdspd.train --student spd --encoder multilingual-e5-small \\
        --teacher all-MiniLM-L6-v2 --output models/kdspd --max-steps 1200

The output folder loads with ``Student.from_pretrained`` and holds the teacher as
``query_encoder/`` plus ``training_log.json`` (losses, dev results, seconds per step,
peak RSS). Re-running on a complete folder reuses it only when every setting that
changes the weights matches (otherwise it refuses and names them; ``--force`` retrains);
``--resume`` continues from ``<output>/checkpoints/`` (exactly: same weights as an
uninterrupted run) and extends a finished run to a larger budget. SIGINT or SIGTERM
stops after the current step with a checkpoint (exit 130 / 143).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from ._cli import NATURAL, NONNEGATIVE, POSITIVE, POSITIVE_INT, number_type

DEFAULTS = {"spd": "mse", "utspd": "mse", "mean": "kd-encoder"}
# Chosen by `python -m pyserini_kdspd.sweep` on FLORES-200 dev (README: learning rates); UTSPD, not swept,
# takes KD-SPD's. KD-Encoder has no fresh parameters (bar a projection to a wider teacher): one lr.
LEARNING_RATES = {"spd": {"lr": 1e-4, "head_lr": 3e-3}, "utspd": {"lr": 1e-4, "head_lr": 3e-3},
                  "mean": {"lr": 2e-4, "head_lr": 2e-4}}
# AdamW's eps per student, chosen by the same sweep (README: learning rates; UTSPD takes KD-SPD's). The paper's
# MSE is a mean over B x d elements of unit vectors, so its gradients are ~1e-8 on the encoder and, through a gate
# near 0, ~1e-10 on KD-SPD's prompts and decoder: torch's eps of 1e-8 then dominates Adam's denominator and
# shrinks their steps.
TORCH_ADAM_EPS = 1e-8
ADAM_EPS = {"spd": 1e-12, "utspd": 1e-12, "mean": 1e-12}
# --residual left unset: per student (README: residual prompts); KD-Encoder is the residual path alone.
RESIDUAL = {"spd": True, "utspd": True, "mean": False}


def other_vector(student: str = "spd") -> tuple[str, str, str]:
    """(label, slug, train flag) of the KD-SPD document vector that ``student`` does not default to: the row the
    ablations and Table 5 add beside the default one."""
    if RESIDUAL[student]:
        return "decoder only (paper)", "decoder-only", "--no-residual"
    return "mean pooling + gated decoder", "residual", "--residual"
# Flags whose value changes the trained weights: a complete folder is reused only when all match
# (with the bitext's languages, content and sampled rows, and the precision after the environment).
WEIGHT_FLAGS = ("student", "encoder", "teacher", "teacher_pooling", "max_pairs_per_language", "batch_per_language",
                "lr", "head_lr", "warmup", "schedule", "weight_decay", "max_length", "prompt_length",
                "decoder_layers", "normalize", "freeze_embeddings", "seed")



def build_parser() -> argparse.ArgumentParser:
    from .distill.losses import OBJECTIVES
    from .models import DEFAULT_BACKBONE, DEFAULT_TEACHER
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--student", choices=["spd", "utspd", "mean"], default="spd",
                   help="spd = KD-SPD, utspd = universal-transformer decoder, mean = KD-Encoder baseline")
    p.add_argument("--encoder", default=DEFAULT_BACKBONE, help="multilingual backbone (alias, HF id or folder)")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help="English dense retriever (alias, HF id or folder)")
    p.add_argument("--teacher-pooling", choices=["cls", "mean"], default=None, help="override the teacher's pooling")
    p.add_argument("--bitext", default=None, help="folder of en-XX.tsv files (default: <data>/bitext)")
    p.add_argument("--data-dir", default=None, help="shared data folder (bitext/, flores200/)")
    p.add_argument("--output", required=True, help="student folder to write")
    p.add_argument("--languages", nargs="+", default=None, help="bitext languages to train on (default: all)")
    p.add_argument("--max-pairs-per-language", type=POSITIVE_INT, default=None, help="seeded random cap per language")
    p.add_argument("--batch-per-language", type=POSITIVE_INT, default=4, help="B: pairs per language per step (paper: 4)")
    p.add_argument("--max-steps", type=POSITIVE_INT, default=None)
    p.add_argument("--max-minutes", type=POSITIVE, default=None,
                   help="wall-clock budget (the first step always runs)")
    p.add_argument("--lr", type=POSITIVE, default=None,
                   help="learning rate of the pretrained encoder (default: the student's in LEARNING_RATES, chosen "
                        "on FLORES dev by python -m pyserini_kdspd.sweep)")
    p.add_argument("--head-lr", type=POSITIVE, default=None,
                   help="learning rate of the fresh prompts/decoder/projection, which start from scratch while the "
                        "encoder is pretrained (default: the student's in LEARNING_RATES; KD-Encoder: --lr; "
                        "--head-lr equal to --lr gives the paper's single lr)")
    p.add_argument("--warmup", type=NONNEGATIVE, default=0.1, help="< 1: fraction of --max-steps; >= 1: steps")
    p.add_argument("--schedule", choices=["linear", "constant"], default="linear",
                   help="after warmup (minutes-only budgets are always constant)")
    p.add_argument("--weight-decay", type=NONNEGATIVE, default=0.01)
    p.add_argument("--adam-eps", type=POSITIVE, default=None,
                   help="AdamW's eps (default: the student's in ADAM_EPS, chosen with the learning rates; keep it "
                        "well below the gradients' scale, about 1e-8 for the paper's MSE on unit vectors)")
    p.add_argument("--max-length", type=number_type(int, 2, True), default=180, help="tokens (paper: 180)")
    p.add_argument("--prompt-length", type=POSITIVE_INT, default=30)
    p.add_argument("--decoder-layers", type=POSITIVE_INT, default=None, help="default: 6 for spd, 12 for utspd")
    p.add_argument("--prompt-kind", choices=["decomposed", "full"], default="decomposed",
                   help="decomposed: the paper's P* ⊙ (u_k v_kᵀ), l + d parameters per language; full: one free l x d "
                        "prompt per language (the ablation), started from the decomposed prompts' values")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="spd/utspd: document vector = the encoder's mean pooling + a gated decoder output, the gate "
                        "starting at 0, so the student starts where KD-Encoder starts (default: the student's in "
                        "RESIDUAL, chosen on FLORES dev; README: residual prompts)")
    p.add_argument("--residual-branch", choices=["gate", "linear"], default="gate",
                   help="with --residual, what carries the decoder into the sum, starting at 0: gate, a per-dimension "
                        "scale (the decoder learns only once it opens), or linear, a d x d map (learns from the first "
                        "step; README: residual prompts)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise student outputs (default: as the teacher does; unit targets are "
                        "unreachable at lr 2e-5 from a fresh decoder's norm ~sqrt(d) otherwise)")
    p.add_argument("--loss", type=loss_spec, default=None, metavar="SPEC",
                   help="objectives joined by +, each NAME[:WEIGHT][:OPTION=VALUE...], e.g. mse+score-kd:0.5 "
                        f"(names: {', '.join(OBJECTIVES)}; README: Objectives); default: mse for spd/utspd, "
                        "kd-encoder for mean")
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True,
                   help="freeze the encoder's word embeddings (250k x 384 for e5-small)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                   help="student and teacher; auto = bf16 autocast only on CPUs with native bf16 (default: "
                        "$PYSERINI_KDSPD_PRECISION, else auto)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=NATURAL, default=1,
                   help="torch threads (OpenMP threads stall while another process holds a core, so side-by-side "
                        "runs use 1 each; README: training notes); 0 = torch default")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the latest checkpoint in <output>/checkpoints up to the "
                        "budget (a larger budget extends a finished run; a run that already reached it is reused)")
    p.add_argument("--force", action="store_true",
                   help="start over in <output>, discarding its run and checkpoints whatever their settings")
    p.add_argument("--checkpoint-every", type=NATURAL, default=100, help="steps (plus every --checkpoint-minutes)")
    p.add_argument("--checkpoint-minutes", type=POSITIVE, default=10.0)
    p.add_argument("--dev-every", type=NATURAL, default=0, help="steps; 0 = before and after training only")
    p.add_argument("--dev-sentences", type=POSITIVE_INT, default=200, help="first N FLORES devtest lines per language")
    p.add_argument("--no-dev", action="store_true", help="skip the FLORES-200 dev evaluation")
    p.add_argument("--flores", default=None, help="FLORES-200 devtest folder (default: <data>/flores200/devtest)")
    p.add_argument("--cache-dir", default=None, help="teacher-target cache root (default: paths.cache_dir())")
    p.add_argument("--precompute-targets", action=argparse.BooleanOptionalAction, default=True,
                   help="encode the English side of every pair the budget will sample before the first step "
                        "(cached on disk: a second student or a rerun computes none)")
    p.add_argument("--targets-only", action="store_true",
                   help="compute and cache the teacher targets of the budget, then exit without training "
                        "(the driver does this once before the two students train side by side)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def loss_spec(text: str) -> str:
    """``--loss`` in canonical form (:func:`~pyserini_kdspd.distill.losses.canonical_loss`), checked before any
    model loads."""
    from .distill.losses import canonical_loss

    try:
        return canonical_loss(text)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--loss {text!r}: ")) from None


def learning_rates(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with unset --lr / --head-lr / --adam-eps taken from the student's :data:`LEARNING_RATES` and
    :data:`ADAM_EPS`."""
    chosen = LEARNING_RATES[args.student]
    args.lr = args.lr or chosen["lr"]
    args.head_lr = args.head_lr or (args.lr if args.student == "mean" else chosen["head_lr"])
    args.adam_eps = args.adam_eps or ADAM_EPS[args.student]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = learning_rates(parser.parse_args(argv))
    if args.max_steps is None and args.max_minutes is None:
        parser.error("give a budget: --max-steps N and/or --max-minutes M")
    if args.student == "mean" and args.prompt_kind != "decomposed":
        parser.error(f"--prompt-kind {args.prompt_kind}: --student mean (KD-Encoder) has no prompts")
    if args.student == "mean" and args.residual:
        parser.error("--residual: --student mean (KD-Encoder) is the residual path alone; it has no decoder")
    if args.residual is None:
        args.residual = RESIDUAL[args.student]
    if args.residual_branch != "gate" and not args.residual:
        parser.error(f"--residual-branch {args.residual_branch}: only a residual student has one (--residual)")
    output = Path(args.output)
    blocker = next((p for p in (output, *output.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        parser.error(f"--output {output}: {blocker} is a file; give a folder for the student")
    try:
        return _train(args, output)
    except KeyboardInterrupt:
        print(f"\ninterrupted; --resume continues from the last checkpoint in {output / 'checkpoints'}, if any",
              file=sys.stderr)
        return 130


def _train(args: argparse.Namespace, output: Path) -> int:
    from .distill import Interrupted, latest_checkpoint, load_bitexts
    from .distill.dev import flores_dir
    from .distill.losses import build_loss
    from .paths import data_dir
    from .runtime import resolve

    # Inputs first: a wrong path or file ends here, before any model loads.
    try:
        needs_data = args.data_dir or not args.bitext or not (args.no_dev or args.flores)
        data = data_dir(args.data_dir, required=True) if needs_data else None
        flores = None if args.no_dev else flores_dir(args.flores, data)
        if flores is not None and not flores.is_dir():
            raise FileNotFoundError(f"{flores}: no FLORES-200 devtest folder (--flores names it, --no-dev skips dev)")
        bitexts = load_bitexts(Path(args.bitext) if args.bitext else data / "bitext", args.languages,
                               args.max_pairs_per_language, args.seed)
        precision = resolve(precision=args.precision).precision
        settings = run_settings(args, bitexts, precision)
        loss = build_loss(settings["loss"], args.max_length)  # reads an objective's input file (QA pairs)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.targets_only:
        return _targets_only(args, bitexts, precision, loss)

    resume = args.resume and not args.force  # --force always starts over
    if not args.force and (stop := _rerun(args, output, settings, resume)) is not None:
        return stop
    if resume and latest_checkpoint(output) is None:
        print(f"no checkpoint in {output / 'checkpoints'}: starting from scratch", flush=True)

    trainer = _build_trainer(args, output, bitexts, flores, precision, settings, loss)
    try:
        log = trainer.train(resume=resume)
    except Interrupted as stop:
        where = f"checkpoint {stop.checkpoint}; the same command with --resume continues it" if stop.checkpoint \
            else "no step finished, nothing to resume"
        print(f"{output}: stopped by {stop.signal_name} after step {stop.step} ({where})", file=sys.stderr)
        return 128 + stop.signum
    print(f"saved {output} ({log['steps']} steps, {log['seconds_per_step']:.2f} s/step, "
          f"peak RSS {log['peak_rss_mb']:.0f} MB, teacher targets computed: {log['targets_precomputed']} before the "
          f"first step, {log['targets_computed']} during training)")
    _print_dev(log)
    return 0


def _targets_only(args: argparse.Namespace, bitexts: dict, precision: str, loss) -> int:
    from .distill.trainer import precompute_targets, teacher_sides

    computed = sum(precompute_targets(side, bitexts, args.batch_per_language, args.seed, args.max_steps,
                                      args.cache_dir, progress=not args.quiet)
                   for side in teacher_sides(_teacher(args, precision), loss))
    print(f"teacher targets of {args.max_steps or 'every'} step(s) cached ({computed} computed now)", flush=True)
    return 0


def _teacher(args: argparse.Namespace, precision: str):
    """Threads and oneDNN's kernel cache set first (before any matmul), then the teacher."""
    import torch

    from .distill import Teacher
    from .runtime import bound_kernel_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    bound_kernel_cache()
    return Teacher(args.teacher, pooling=args.teacher_pooling, max_length=args.max_length, precision=precision)


def _rerun(args: argparse.Namespace, output: Path, settings: dict, resume: bool) -> int | None:
    """What to do with the run already in ``output``: None trains (afresh, resumed or extended), a number exits."""
    from .distill import is_complete, latest_checkpoint
    from .distill.trainer import LOG_NAME, budget_kind

    try:
        previous = json.loads((output / LOG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no (readable) log: nothing finished here
    differing = differing_settings(previous.get("settings"), settings)
    ckpt = latest_checkpoint(output)
    if not is_complete(output):
        if ckpt is None:
            return None  # stopped before its first checkpoint: nothing to continue
        if differing:
            return _refuse(output, f"an interrupted run (checkpoint {ckpt}) with other settings", differing)
        if not resume:
            return _refuse(output, f"an interrupted run (checkpoint {ckpt})", ["--resume continues it"])
        return None
    if differing:
        return _refuse(output, "a complete run with other settings", differing)
    if args.max_minutes is None and budget_kind(previous) == "minutes":
        # its step count came from the machine's speed: not the run a steps budget asks for, even with as many steps
        return _refuse(output, "a run trained on a wall-clock budget (--max-minutes)",
                       ["its weights depend on how fast the machine was; a --max-steps run is reproducible"])
    steps, minutes = int(previous.get("steps", 0)), float(previous.get("elapsed_seconds", 0.0)) / 60
    budget = {"max_steps": args.max_steps, "max_minutes": args.max_minutes}
    done_budget = {key: previous.get("args", {}).get(key) for key in budget}
    reached = ((args.max_steps is not None and steps >= args.max_steps)
               or (args.max_minutes is not None and minutes >= args.max_minutes - 0.5))
    if budget == done_budget or resume and reached:
        print(f"{output} already holds a complete run with these settings ({steps} steps, {minutes:.1f} min; see "
              f"{output / LOG_NAME}); reusing it (--force retrains, --resume with a larger budget extends)")
        _print_dev(previous)
        return 0
    if not resume:
        return _refuse(output, "a complete run with another budget",
                       differing_settings(done_budget, budget) + ["--resume extends it to a larger budget"])
    if ckpt is None:
        return _refuse(output, "a complete run", [f"no checkpoint in {output / 'checkpoints'} to extend it from"])
    print(f"{output}: extending the finished run ({steps} steps, {minutes:.1f} min) to the new budget", flush=True)
    return None


def _build_trainer(args: argparse.Namespace, output: Path, bitexts: dict, flores: Path | None, precision: str,
                   settings: dict, loss=None):
    """Teacher, fresh student, loss (``settings["loss"]`` unless given) and dev set: everything that loads a
    model."""
    from .distill import DevEvaluator, DistillationTrainer, TrainingArguments
    from .distill.losses import build_loss
    from .distill.trainer import set_seed
    from .models import model_settings, resolve_model
    from .spd import Student, StudentConfig

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"bitext: {', '.join(f'{l} {len(b)}' for l, b in bitexts.items())} pairs", flush=True)
    teacher = _teacher(args, precision)
    print(f"teacher: {teacher.name} ({teacher.path}), dim {teacher.dim}, {teacher.precision}", flush=True)

    normalize = bool(teacher.settings.get("l2_norm")) if args.normalize is None else args.normalize
    from transformers import AutoConfig
    hidden = AutoConfig.from_pretrained(resolve_model(args.encoder)).hidden_size
    config = StudentConfig(encoder=args.encoder, student=args.student, prompt_length=args.prompt_length,
                           prompt_kind=args.prompt_kind, decoder_layers=args.decoder_layers, residual=args.residual,
                           residual_branch=args.residual_branch,
                           languages=["en"] + sorted(bitexts),
                           max_length=args.max_length, normalize=normalize,
                           passage_prefix=model_settings(args.encoder).get("passage_prefix") or "",
                           teacher=teacher.query_settings(), output_dim=None if hidden == teacher.dim else teacher.dim)
    set_seed(args.seed)  # the fresh prompts/decoder (and projection) are initialised from the seed
    student = Student.build(config)

    targs = TrainingArguments(
        output_dir=str(output), max_steps=args.max_steps, max_minutes=args.max_minutes, lr=args.lr, head_lr=args.head_lr,
        warmup=args.warmup, schedule=args.schedule, weight_decay=args.weight_decay, adam_eps=args.adam_eps,
        batch_per_language=args.batch_per_language, max_length=args.max_length, seed=args.seed,
        precision=precision, freeze_embeddings=args.freeze_embeddings,
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        dev_every=args.dev_every, progress=not args.quiet)
    loss = build_loss(settings["loss"], args.max_length) if loss is None else loss
    dev = None if flores is None else DevEvaluator(teacher, max_sentences=args.dev_sentences, folder=flores,
                                                    cache_dir=args.cache_dir, trained=sorted(bitexts))
    trainer = DistillationTrainer(student, teacher, bitexts, targs, loss=loss, dev=dev, cache_dir=args.cache_dir,
                                  settings=settings)
    if args.precompute_targets:
        trainer.precompute_targets(progress=not args.quiet)
    return trainer


def run_settings(args: argparse.Namespace, bitexts: dict, precision: str) -> dict:
    """Everything that changes the weights (recorded in the training log, compared by a rerun)."""
    from .distill.bitext import texts_key
    from .distill.losses import loss_files
    from .runtime import EXACT_BATCHES

    settings = {name: getattr(args, name) for name in WEIGHT_FLAGS}
    if args.prompt_kind != "decomposed":  # recorded only off its default: runs logged before the flag still match
        settings["prompt_kind"] = args.prompt_kind
    if args.residual:  # likewise
        settings["residual"] = True
    if args.residual_branch != "gate":  # likewise
        settings["residual_branch"] = args.residual_branch
    if args.adam_eps != TORCH_ADAM_EPS:  # likewise
        settings["adam_eps"] = args.adam_eps
    loss = args.loss or DEFAULTS[args.student]
    if files := loss_files(loss):  # the content of a file an objective reads (QA pairs) changes the weights
        settings["loss_files"] = files
    # the teacher's batching changes its targets in the last bits on some CPUs (runtime.EXACT_ROWS), so the weights too
    settings.update(loss=loss, precision=precision, languages=sorted(bitexts), teacher_batches=EXACT_BATCHES,
                    bitext={lang: "-".join([texts_key(b.english), texts_key(b.other),
                                            hashlib.sha256(b.rows.tobytes()).hexdigest()[:20]])
                            for lang, b in bitexts.items()})
    return json.loads(json.dumps(settings))  # as the log will read back


def differing_settings(recorded: dict | None, wanted: dict) -> list[str]:
    """``--flag: recorded -> wanted`` for every setting that differs."""
    if recorded is None:
        return ["settings: not recorded (the run predates this check)"]
    lines = []
    for key in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):  # the bitext: content hashes per language
            changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
            if changed:
                lines.append(f"bitext: content or sampled pairs of {', '.join(f'en-{k}.tsv' for k in changed)}")
        else:
            lines.append(f"--{key.replace('_', '-')}: {_show(old)} -> {_show(new)}")
    return lines


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "(not set)" if value is None else str(value)


def _refuse(output: Path, holds: str, reasons: list[str]) -> int:
    print(f"error: {output} holds {holds}:\n"
          + "".join(f"  {r}\n" for r in reasons)
          + f"Pass --force to retrain in {output}, or choose another --output.", file=sys.stderr)
    return 2


def _print_dev(log: dict) -> None:
    """The FLORES dev table of a training log: first evaluation -> last."""
    from .distill import markdown_table

    dev = log.get("dev") or []
    if dev:
        before = dev[0]["results"] if len(dev) > 1 and dev[0]["step"] == 0 else None
        print(f"FLORES-200 devtest at step {dev[-1]['step']}:")
        print(markdown_table(dev[-1]["results"], before), flush=True)


if __name__ == "__main__":
    sys.exit(main())
