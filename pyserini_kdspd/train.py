"""Distil an English teacher into a KD-SPD (or KD-Encoder) student.

    python -m pyserini_kdspd.train --student spd --encoder multilingual-e5-small \\
        --teacher all-MiniLM-L6-v2 --bitext /work/shared/data/bitext --output models/kdspd --max-minutes 10

The output folder loads with ``Student.from_pretrained`` and holds the teacher as
``query_encoder/`` plus ``training_log.json`` (losses, dev results, seconds per step,
peak RSS). Re-running on a complete folder reuses it unless ``--force``; ``--resume``
continues from ``<output>/checkpoints/`` (exactly: same weights as an uninterrupted run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

DEFAULTS = {"spd": "mse", "utspd": "mse", "mean": "kd-encoder"}


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--max-pairs-per-language", type=int, default=None, help="seeded random cap per language")
    p.add_argument("--batch-per-language", type=int, default=4, help="B: pairs per language per step (paper: 4)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--head-lr", type=float, default=1e-3,
                   help="learning rate of the fresh prompts/decoder/projection; 1e-3 measured P@1 en->xx 0.26 vs "
                        "0.006 with 2e-5 after 10 CPU-minutes (use --head-lr 2e-5 for the paper's single lr)")
    p.add_argument("--warmup", type=float, default=0.1, help="< 1: fraction of --max-steps; >= 1: steps")
    p.add_argument("--schedule", choices=["linear", "constant"], default="linear",
                   help="after warmup (minutes-only budgets are always constant)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=180, help="tokens (paper: 180)")
    p.add_argument("--prompt-length", type=int, default=30)
    p.add_argument("--decoder-layers", type=int, default=None, help="default: 6 for spd, 12 for utspd")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise student outputs (default: as the teacher does; unit targets are "
                        "unreachable at lr 2e-5 from a fresh decoder's norm ~sqrt(d) otherwise)")
    p.add_argument("--loss", choices=["mse", "kd-encoder"], default=None,
                   help="default: mse for spd/utspd, kd-encoder for mean")
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True,
                   help="freeze the encoder's word embeddings (250k x 384 for e5-small)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto = bf16 autocast only on CPUs with native bf16")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 measured 5x faster than 2 per step on the shared 2-core box (OpenMP "
                        "threads stall when another process holds a core); 0 = torch default")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in <output>/checkpoints up to the budget (a larger "
                        "budget extends a finished run; a run that already reached it is reused)")
    p.add_argument("--force", action="store_true", help="retrain even if <output> holds a complete run")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps (plus every --checkpoint-minutes)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--dev-every", type=int, default=0, help="steps; 0 = before and after training only")
    p.add_argument("--dev-sentences", type=int, default=200, help="first N FLORES devtest lines per language")
    p.add_argument("--no-dev", action="store_true", help="skip the FLORES-200 dev evaluation")
    p.add_argument("--flores", default=None, help="FLORES-200 devtest folder (default: <data>/flores200/devtest)")
    p.add_argument("--cache-dir", default=None, help="teacher-target cache root (default: paths.cache_dir())")
    p.add_argument("--precompute-targets", action="store_true",
                   help="encode every sampled pair's English side with the teacher before training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_steps is None and args.max_minutes is None:
        print("error: give a budget: --max-steps N and/or --max-minutes M", file=sys.stderr)
        return 2
    import torch

    from .distill import (DevEvaluator, DistillationTrainer, KDEncoderLoss, MSELoss, Teacher, TrainingArguments,
                          is_complete, latest_checkpoint, load_bitexts)
    from .distill.trainer import LOG_NAME, set_seed
    from .models import model_settings, resolve_model
    from .paths import data_dir
    from .spd import Student, StudentConfig

    output = Path(args.output)
    if is_complete(output) and not args.force:
        done = json.loads((output / LOG_NAME).read_text())
        steps, minutes = int(done.get("steps", 0)), float(done.get("elapsed_seconds", 0.0)) / 60
        reached = ((args.max_steps is not None and steps >= args.max_steps)
                   or (args.max_minutes is not None and minutes >= args.max_minutes - 0.5))
        if not args.resume or reached or latest_checkpoint(output) is None:
            print(f"{output} already holds a complete run ({steps} steps, {minutes:.1f} min; see "
                  f"{output / LOG_NAME}); reusing it (--force retrains, --resume with a larger budget extends)")
            _print_dev(done)
            return 0
        print(f"{output}: extending the finished run ({steps} steps, {minutes:.1f} min) to the new budget", flush=True)
    if args.force and output.exists() and not args.resume:
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        (output / LOG_NAME).unlink(missing_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    bitext = Path(args.bitext) if args.bitext else data_dir(args.data_dir, required=True) / "bitext"
    bitexts = load_bitexts(bitext, args.languages, args.max_pairs_per_language, args.seed)
    print(f"bitext: {', '.join(f'{l} {len(b)}' for l, b in bitexts.items())} pairs", flush=True)
    teacher = Teacher(args.teacher, pooling=args.teacher_pooling, max_length=args.max_length)
    print(f"teacher: {teacher.name} ({teacher.path}), dim {teacher.dim}, {teacher.precision}", flush=True)

    normalize = bool(teacher.settings.get("l2_norm")) if args.normalize is None else args.normalize
    from transformers import AutoConfig
    hidden = AutoConfig.from_pretrained(resolve_model(args.encoder)).hidden_size
    settings = model_settings(args.encoder)
    config = StudentConfig(encoder=args.encoder, student=args.student, prompt_length=args.prompt_length,
                           decoder_layers=args.decoder_layers, languages=["en"] + sorted(bitexts),
                           max_length=args.max_length, normalize=normalize,
                           passage_prefix=settings.get("passage_prefix") or "", teacher=teacher.query_settings(),
                           output_dim=None if hidden == teacher.dim else teacher.dim)
    set_seed(args.seed)  # the fresh prompts/decoder (and projection) are initialised from the seed
    student = Student.build(config)

    targs = TrainingArguments(
        output_dir=str(output), max_steps=args.max_steps, max_minutes=args.max_minutes, lr=args.lr, head_lr=args.head_lr,
        warmup=args.warmup, schedule=args.schedule, weight_decay=args.weight_decay,
        batch_per_language=args.batch_per_language, max_length=args.max_length, seed=args.seed,
        precision=args.precision, freeze_embeddings=args.freeze_embeddings,
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        dev_every=args.dev_every, progress=not args.quiet)
    loss_name = args.loss or DEFAULTS[args.student]
    loss = (KDEncoderLoss if loss_name == "kd-encoder" else MSELoss)(args.max_length)
    dev = None
    if not args.no_dev:
        flores = args.flores or (data_dir(args.data_dir, required=True) / "flores200" / "devtest")
        dev = DevEvaluator(teacher, max_sentences=args.dev_sentences, folder=flores, cache_dir=args.cache_dir)
    trainer = DistillationTrainer(student, teacher, bitexts, targs, loss=loss, dev=dev, cache_dir=args.cache_dir)
    if args.precompute_targets:
        for lang, cache in trainer.caches.items():
            cache.fill(bitexts[lang].rows, progress=not args.quiet)
    if args.resume and latest_checkpoint(output) is None:
        print(f"no checkpoint in {output / 'checkpoints'}: starting from scratch", flush=True)
    log = trainer.train(resume=args.resume)
    print(f"saved {output} ({log['steps']} steps, {log['seconds_per_step']:.2f} s/step, "
          f"peak RSS {log['peak_rss_mb']:.0f} MB, teacher targets computed: {log['targets_computed']})")
    _print_dev(log)
    return 0


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
