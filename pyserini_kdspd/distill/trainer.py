"""The distillation loop: AdamW + warmup, step or minute budgets, exact resume.

A checkpoint holds everything the next step depends on (model, optimizer,
scheduler, sampler position and the python/numpy/torch RNG states, the latter
drive dropout), so a run killed after step k and resumed ends with exactly the
weights of an uninterrupted run (tested with ``torch.equal``). Teacher targets come
from the on-disk :class:`~.teacher.TargetCache`, so a resumed run or a second
student on the same bitext does no teacher forward pass for pairs already seen.

Learning-rate schedule: linear warmup to ``lr``, then linear decay to 0 at
``max_steps`` (``schedule="linear"``), or constant (``schedule="constant"``, the
only choice with a minutes-only budget since the last step is unknown).

A folder counts as finished (:func:`is_complete`) only through its training log,
written last and marked complete only after at least one step and the saved
weights; from the start of a run until then the log says incomplete. SIGINT and
SIGTERM stop the loop after the current step with a checkpoint (:class:`Interrupted`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import atomic_write
from ..runtime import peak_rss_mb
from ..spd.student import CONFIG_NAME, QUERY_ENCODER_DIR
from .bitext import Bitext, LanguageBatchSampler
from .losses import QUERIES, Batch, build_loss, query_teacher
from .teacher import TargetCache, Teacher

LOG_NAME = "training_log.json"
CHECKPOINTS = "checkpoints"
_CKPT_RE = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingArguments:
    """Hyper-parameters of a distillation run (defaults: paper section 3.3, and the CPU choices the README
    lists with their measurements)."""

    output_dir: str
    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float = 2e-5
    head_lr: float | None = None   # lr of the fresh prompts/decoder/projection (None: lr)
    warmup: float = 0.1            # < 1: fraction of max_steps; >= 1: steps
    schedule: str = "linear"       # "linear" (decay to 0 at max_steps) | "constant"
    weight_decay: float = 0.01
    adam_eps: float = 1e-8         # AdamW's eps (torch's default); see train.ADAM_EPS for why a student may want less
    grad_clip: float = 1.0
    batch_per_language: int = 4
    max_length: int = 180
    seed: int = 42
    precision: str | None = None   # auto | bf16 | fp32; None: $PYSERINI_KDSPD_PRECISION, else auto (runtime.resolve)
    freeze_embeddings: bool = False
    checkpoint_every: int = 100    # steps; 0 = only at the end
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 1
    dev_every: int = 0             # steps; 0 = before and after training only
    log_every: int = 10
    progress: bool = True

    def __post_init__(self):
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("give a budget: max_steps and/or max_minutes")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError("max_minutes must be > 0")
        if self.batch_per_language < 1:
            raise ValueError("batch_per_language must be >= 1")
        if not self.adam_eps > 0:
            raise ValueError("adam_eps must be > 0")
        if self.schedule not in ("linear", "constant"):
            raise ValueError("schedule must be 'linear' or 'constant'")
        if self.schedule == "linear" and self.max_steps is None:
            self.schedule = "constant"

    def warmup_steps(self) -> int:
        if self.warmup >= 1:
            return int(self.warmup)
        if self.max_steps is not None:
            return int(round(self.warmup * self.max_steps))
        return 50  # minutes-only budget: a fixed short warmup


def bitext_targets(teacher: Teacher, lang: str, bitext: Bitext, cache_dir=None) -> TargetCache:
    """The target cache of one bitext file's English side (shared by every run on that file)."""
    return TargetCache(teacher, bitext.english, f"bitext-{lang}-{bitext.english_key()}", cache_dir)


def planned_rows(bitexts: dict[str, Bitext], batch_per_language: int, seed: int,
                 steps: int | None) -> dict[str, np.ndarray]:
    """Per bitext file, the rows whose teacher target ``steps`` steps of training will ask for
    (the sampler is deterministic); every row when ``steps`` is None (a minutes budget)."""
    if steps is None:
        return {lang: np.asarray(b.rows) for lang, b in bitexts.items()}
    sampler = LanguageBatchSampler(bitexts, batch_per_language, seed)
    rows: dict[str, list[int]] = {lang: [] for lang in bitexts}
    for _ in range(steps):
        for ex in sampler.next_batch():
            rows[ex.source_lang].append(ex.row)
    return {lang: np.unique(np.asarray(r, dtype=np.int64)) for lang, r in rows.items()}


def precompute_targets(teacher: Teacher, bitexts: dict[str, Bitext], batch_per_language: int, seed: int,
                       steps: int | None, cache_dir=None, progress: bool = True,
                       caches: dict[str, TargetCache] | None = None) -> int:
    """Teacher targets of every pair ``steps`` steps will sample, computed before training in full
    batches (one token length each) and cached on disk, so that no step waits for the teacher and a
    second student or a rerun on the same bitext computes none. ``caches`` (per language) are used
    when given, else opened. Returns how many were computed."""
    computed = 0
    for lang, rows in planned_rows(bitexts, batch_per_language, seed, steps).items():
        cache = caches[lang] if caches is not None else bitext_targets(teacher, lang, bitexts[lang], cache_dir)
        computed += cache.fill(rows, progress=progress)
        cache.flush()
    return computed


def teacher_sides(teacher: Teacher, loss) -> list[Teacher]:
    """The teachers whose vectors of the English sides a run on ``loss`` reads from the target caches: the
    teacher, and its query side (:func:`~.losses.query_teacher`) when an objective needs it and it differs."""
    queries = query_teacher(teacher) if QUERIES in loss.needs else teacher
    return [teacher] if queries is teacher else [teacher, queries]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def latest_checkpoint(output_dir) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _CKPT_RE.match(p.name)) and (p / "state.pt").is_file()]
    return max(found)[1] if found else None


def budget_kind(log: dict) -> str:
    """"minutes" when any segment of the run had a wall-clock limit, else "steps" (also for a new log);
    logs written before the field existed say so by their ``args``."""
    return log.get("budget") or ("minutes" if (log.get("args") or {}).get("max_minutes") is not None else "steps")


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped training after ``step``; ``checkpoint`` (None before the first step) resumes it."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"{self.signal_name} after step {step}" + (f", checkpoint {checkpoint}" if checkpoint else ""))


def is_complete(output_dir) -> bool:
    """A finished run: saved student + query encoder + a log marked complete."""
    out = Path(output_dir)
    log = out / LOG_NAME
    if not (log.is_file() and (out / CONFIG_NAME).is_file() and (out / QUERY_ENCODER_DIR).is_dir()):
        return False
    try:
        return bool(json.loads(log.read_text()).get("complete"))
    except json.JSONDecodeError:
        return False


class DistillationTrainer:
    """Distils ``teacher`` into ``student`` on ``bitexts`` with ``loss``, an :class:`~.losses.Objective`
    (default: ``mse`` for KD-SPD, ``kd-encoder`` for a mean-pooling student).

    An objective that needs the teacher's query vectors of the English sides gets them like the
    targets: computed before the first step and cached per row (:func:`query_teacher`'s cache, itself
    when the teacher encodes queries as documents). The loss's parts are logged per step.

    ``dev`` (a :class:`~.dev.DevEvaluator`) runs before training, every
    ``dev_every`` steps and at the end. ``cache_dir`` overrides where teacher targets
    are cached (default ``paths.cache_dir()``). ``settings`` (JSON-able) is stored in
    the log as the caller's account of what produced the weights (``train`` compares
    it before reusing a folder).
    """

    def __init__(self, student: nn.Module, teacher: Teacher, bitexts: dict[str, Bitext], args: TrainingArguments,
                 loss: nn.Module | None = None, dev=None, cache_dir=None, settings: dict | None = None):
        self.student, self.teacher, self.bitexts, self.args, self.dev = student, teacher, bitexts, args, dev
        self.settings = settings
        self._stop: int | None = None  # the signal number that asked the loop to stop
        if loss is None:
            loss = build_loss("kd-encoder" if student.config.student == "mean" else "mse", args.max_length)
        self.loss = loss
        self.output = Path(args.output_dir)
        self.precomputed = 0  # teacher targets computed before the first step
        self.caches = {lang: bitext_targets(teacher, lang, b, cache_dir) for lang, b in bitexts.items()}
        # every (teacher, caches) whose vectors are precomputed; the query vectors of objectives that need them
        self._sides = [(side, self.caches if side is teacher else
                        {lang: bitext_targets(side, lang, b, cache_dir) for lang, b in bitexts.items()})
                       for side in teacher_sides(teacher, loss)]
        self.query_caches = self._sides[-1][1] if QUERIES in loss.needs else None
        loss.bind(teacher, cache_dir, args.seed)
        from ..runtime import resolve
        self.precision = resolve(precision=args.precision).precision_for(student.device)
        self._teacher_dim_check()

    def _teacher_dim_check(self):
        if self.student.output_dim != self.teacher.dim:
            raise ValueError(f"student output dim {self.student.output_dim} != teacher dim {self.teacher.dim}: "
                             f"build the student with StudentConfig(output_dim={self.teacher.dim})")

    def precompute_targets(self, progress: bool = True) -> int:
        """:func:`precompute_targets` for this run's budget, query vectors included when the loss needs them
        (the count goes to the log)."""
        for teacher, caches in self._sides:
            self.precomputed += precompute_targets(teacher, self.bitexts, self.args.batch_per_language,
                                                   self.args.seed, self.args.max_steps, progress=progress,
                                                   caches=caches)
        return self.precomputed

    # ------------------------------------------------------------------ pieces
    def _optimizer(self):
        if self.args.freeze_embeddings:
            self.student.encoder.get_input_embeddings().weight.requires_grad_(False)
        head_lr = self.args.head_lr or self.args.lr
        buckets: dict[tuple[bool, bool], list] = {}
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            is_head = not name.startswith("encoder.")
            no_decay = p.ndim < 2 or "norm" in name.lower()
            buckets.setdefault((is_head, no_decay), []).append((name, p))
        ordered = sorted(buckets.items())
        groups = [{"params": [p for _, p in named], "lr": head_lr if head else self.args.lr,
                   "weight_decay": 0.0 if nd else self.args.weight_decay}
                  for (head, nd), named in ordered]
        # the optimizer's state is indexed by position: checkpoints keep the names (distill.adam reads them)
        self._param_names = [name for _, named in ordered for name, _ in named]
        try:  # the fused CPU kernel is faster than the default per-tensor loop (README: training notes)
            opt = torch.optim.AdamW(groups, lr=self.args.lr, eps=self.args.adam_eps, fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.AdamW(groups, lr=self.args.lr, eps=self.args.adam_eps)
        warm = self.args.warmup_steps()
        total = self.args.max_steps

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / (warm + 1)
            if self.args.schedule == "linear" and total:
                return max(0.0, (total - step) / max(1, total - warm))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return opt, sched

    def _caches(self) -> list[TargetCache]:
        return [cache for _, caches in self._sides for cache in caches.values()]

    def make_batch(self, examples) -> Batch:
        """Texts, languages and teacher targets (from the cache) of one sampled step, and the teacher's
        query vectors of the English sides when the loss needs them."""
        by_file: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            by_file.setdefault(ex.source_lang, []).append(i)

        def vectors(caches):
            out = np.zeros((len(examples), self.teacher.dim), dtype=np.float32)
            for src, idx in by_file.items():
                out[idx] = caches[src].get([examples[i].row for i in idx])
            return torch.from_numpy(out)
        return Batch(texts=[e.text for e in examples], langs=[e.lang for e in examples],
                     english=[e.english for e in examples], targets=vectors(self.caches),
                     queries=None if self.query_caches is None else vectors(self.query_caches))

    def _autocast(self):
        from ..runtime import autocast
        return autocast(self.precision, self.student.device)

    def _save_checkpoint(self, step, opt, sched, sampler, state: dict) -> Path:
        for cache in self._caches():
            cache.flush()
        folder = self.output / CHECKPOINTS
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"step-{step:07d}"
        tmp = folder / f".step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save({"model": self.student.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "sampler": sampler.state_dict(), "rng": _rng_state(),
                    "step": step, "log": state, "args": asdict(self.args),
                    "param_names": self._param_names}, tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        olds = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name)))
        for _, p in olds[:-max(1, self.args.keep_checkpoints)]:
            shutil.rmtree(p, ignore_errors=True)
        self._write_log(state)
        return final

    def _write_log(self, log: dict) -> None:
        with atomic_write(self.output / LOG_NAME) as f:
            json.dump(log, f, indent=1, default=_json_default)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM ask the loop to stop after the current step; a second one stops at once."""
        self._stop = None
        if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
            yield
            return

        def ask(signum, frame):
            if self._stop is not None:
                raise KeyboardInterrupt
            self._stop = signum
            # os.write, not print: the handler may run inside a print (tqdm's) and buffered streams are not reentrant
            os.write(2, f"\n{signal.Signals(signum).name}: finishing the current step, then saving a checkpoint "
                        f"(again to stop at once)\n".encode())

        previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _evaluate(self, step: int, log: dict) -> None:
        if self.dev is None:
            return
        t = time.time()
        results = self.dev(self.student, precision=self.precision)
        log["dev"].append({"step": step, "seconds": round(time.time() - t, 1), "results": results})
        m = results.get("mean", {})
        msg = (f"dev @ step {step}: MSE {m.get('mse', float('nan')) * 1e3:.3f}e-3 "
               f"P@1 xx->en {m.get('p1_xx_en', float('nan')):.3f} en->xx {m.get('p1_en_xx', float('nan')):.3f} "
               f"pooled MAP {results['pooled']['map']:.3f} (query side {results['pooled']['query_map']:.3f})")
        log.setdefault("messages", []).append(msg)
        print(msg, flush=True)

    # ------------------------------------------------------------------ loop
    def train(self, resume: bool = False) -> dict:
        """Run to the budget; returns the training log (also written to ``training_log.json``).

        Without ``resume`` earlier checkpoints in the folder are discarded. Raises :class:`Interrupted`
        when SIGINT/SIGTERM stopped it (after the current step, with a checkpoint).
        """
        with self._stop_on_signals():
            return self._train(resume)

    def _train(self, resume: bool) -> dict:
        args = self.args
        self.output.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.rmtree(self.output / CHECKPOINTS, ignore_errors=True)
        set_seed(args.seed)
        opt, sched = self._optimizer()
        sampler = LanguageBatchSampler(self.bitexts, args.batch_per_language, args.seed)
        log = {"complete": False, "losses": [], "dev": [], "step_seconds": [], "elapsed_seconds": 0.0,
               "targets_computed": 0, "resumed_from": []}
        step = 0
        ckpt = latest_checkpoint(self.output) if resume else None
        if ckpt is not None:
            state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
            self.student.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            sampler.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"])
            step = int(state["step"])
            log = state["log"]
            log["resumed_from"].append(step)
            print(f"resumed from {ckpt} (step {step})", flush=True)

        trainable = sum(p.numel() for p in self.student.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.student.parameters())
        # "minutes" once any segment of the run had a wall-clock limit: its step count then depends on the
        # machine's speed, so its weights are not reproducible from the settings (README: Table 2).
        timed = args.max_minutes is not None or budget_kind(log) == "minutes"
        log.update({"budget": "minutes" if timed else "steps",
                    "trainable_parameters": trainable, "parameters": total, "precision": self.precision,
                    "threads": torch.get_num_threads(), "teacher": self.teacher.query_settings(),
                    "teacher_precision": self.teacher.precision, "args": asdict(args),
                    "languages": sampler.batch_languages,
                    "loss": getattr(self.loss, "spec", type(self.loss).__name__)})
        if self.settings is not None:
            log["settings"] = self.settings
        self._write_log(log)  # says "incomplete" (over any earlier complete log) until finalize
        if ckpt is None and self.dev is not None:
            self._evaluate(0, log)
        self.student.train()
        budget_s = args.max_minutes * 60 if args.max_minutes is not None else math.inf
        started = time.time() - log["elapsed_seconds"]

        def budget_left() -> bool:  # a minutes budget always gets its first step: no run ends with none
            if args.max_steps is not None and step >= args.max_steps:
                return False
            return step == 0 or time.time() - started < budget_s
        last_ckpt_time = time.time()
        pbar = None
        if args.progress:
            from tqdm import tqdm
            pbar = tqdm(total=args.max_steps, initial=step, desc=f"distil {self.student.config.student}",
                        unit="step", dynamic_ncols=True)
        running = []
        computed_before = sum(c.computed for c in self._caches())
        first = step
        while budget_left() and self._stop is None:
            t0 = time.time()
            batch = self.make_batch(sampler.next_batch())
            batch.step = step
            t1 = time.time()
            with self._autocast():
                loss, parts = self.loss(self.student, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step + 1}: loss is {loss.item()}")
            loss.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], args.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            running = (running + [value])[-50:]
            log["losses"].append([step, value])
            log.setdefault("loss_parts", []).append([step, {name: float(p.detach()) for name, p in parts.items()}])
            log["step_seconds"].append(round(time.time() - t1, 4))
            log.setdefault("target_seconds", []).append(round(t1 - t0, 4))
            if pbar is not None:
                pbar.update(1)
                pbar.set_postfix(loss=f"{np.mean(running):.3e}", lr=f"{sched.get_last_lr()[0]:.2e}")
            log["elapsed_seconds"] = time.time() - started
            done = not budget_left() or self._stop is not None
            if args.dev_every and step % args.dev_every == 0 and not done:
                self._evaluate(step, log)
                self.student.train()
            if not done and ((args.checkpoint_every and step % args.checkpoint_every == 0)
                             or time.time() - last_ckpt_time >= args.checkpoint_minutes * 60):
                self._save_checkpoint(step, opt, sched, sampler, log)
                last_ckpt_time = time.time()
        if pbar is not None:
            pbar.close()
        log["targets_precomputed"] = log.get("targets_precomputed", 0) + self.precomputed
        log["targets_computed"] = log.get("targets_computed", 0) + \
            sum(c.computed for c in self._caches()) - computed_before
        log["elapsed_seconds"] = time.time() - started
        # the last checkpoint lets --resume continue an interrupted run or extend a finished one
        ckpt = self._save_checkpoint(step, opt, sched, sampler, log) if step > first else latest_checkpoint(self.output)
        if self._stop is None:
            self.student.eval()
            if self.dev is not None and (not log["dev"] or log["dev"][-1]["step"] != step):
                self._evaluate(step, log)
        if self._stop is not None:
            raise Interrupted(self._stop, step, ckpt)
        self.finalize(step, log)
        return log

    def finalize(self, step: int, log: dict) -> None:
        """Save the student, a copy of the teacher as ``query_encoder/`` and, last, ``training_log.json``
        marked complete."""
        if step < 1:
            raise ValueError(f"{self.output}: no step trained; a folder is never marked complete without one")
        settings = self.teacher.query_settings()
        settings["path"] = QUERY_ENCODER_DIR  # relative to the student folder: self-contained
        settings["source"] = self.teacher.path
        self.student.config.teacher = settings
        self.teacher.save_query_encoder(self.output / QUERY_ENCODER_DIR)
        self.student.save_pretrained(self.output)
        secs = log["step_seconds"][1:] or log["step_seconds"]
        log.update({"complete": True, "steps": step, "seconds_per_step": float(np.mean(secs)) if secs else None,
                    "seconds_per_step_median": float(np.median(secs)) if secs else None,
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "final_loss": float(np.mean([l for _, l in log["losses"][-50:]])) if log["losses"] else None})
        self._write_log(log)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
