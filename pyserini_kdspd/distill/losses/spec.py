"""``--loss`` specs: objectives by name, combined with weights, with options.

    mse                                   KD-SPD's eq. 5 alone
    mse+score-kd:0.5                      eq. 5 + 0.5 x in-batch score distillation
    score-kd:temperature=0.1+mse          options are the objective's keyword arguments
    cl-rekd-qq+cl-rekd-dd+cl-rekd-dq:0.5:qa=data/nq-pairs.jsonl

A term is ``NAME[:WEIGHT][:KEY=VALUE]...`` (weight 1 when absent); terms are joined by ``+``. The
canonical form (weights of 1 dropped, options sorted) is what the training log and the run's
settings record, so ``mse:1`` and ``mse`` are the same run.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...io import sha256_file
from .base import OBJECTIVES, Batch, LossOutput, Objective

_BUILT_IN = ("max_length", "chunk_size")  # set from the trainer's arguments, not from the spec


@dataclass(frozen=True)
class Term:
    name: str
    weight: float
    options: tuple[tuple[str, object], ...]

    def __str__(self) -> str:
        fields = ([] if self.weight == 1 else [f"{self.weight:g}"]) + [f"{k}={_show(v)}" for k, v in self.options]
        return ":".join([self.name] + fields)


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _options(cls: type[Objective]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {name: p for name, p in params.items() if name != "self" and name not in _BUILT_IN
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _convert(spec: str, name: str, key: str, text: str, default):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        kind = ("true or false" if isinstance(default, bool) else "an integer" if isinstance(default, int)
                else "a number")
        raise ValueError(f"--loss {spec!r}: {name} option {key}={text!r} is not {kind}") from None
    return text


def parse_loss(spec: str) -> list[Term]:
    """The terms of a ``--loss`` spec; a ValueError says what is wrong in it (unknown name or option, a bad
    weight, an input file that does not exist) before any model loads."""
    terms: list[Term] = []
    for part in spec.split("+"):
        name, *fields = part.strip().split(":")
        if name not in OBJECTIVES:
            raise ValueError(f"--loss {spec!r}: unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
        if name in (t.name for t in terms):
            raise ValueError(f"--loss {spec!r}: {name} appears twice; give it once with its weight")
        cls, weight, options = OBJECTIVES[name], None, {}
        allowed = _options(cls)
        for f in fields:
            key, eq, text = f.partition("=")
            key = key.strip().replace("-", "_")
            if not eq:
                try:
                    value = float(f)
                except ValueError:
                    value = math.nan
                if weight is not None or not (math.isfinite(value) and value > 0):
                    raise ValueError(f"--loss {spec!r}: {name}:{f}: expected one weight > 0 or KEY=VALUE")
                weight = value
            elif key not in allowed:
                known = ", ".join(allowed) or "none"
                raise ValueError(f"--loss {spec!r}: {name} has no option {key!r} (options: {known})")
            else:
                default = allowed[key].default
                options[key] = _convert(spec, name, key, text.strip(), None if default is inspect.Parameter.empty
                                        else default)
                if key in cls.files and not Path(options[key]).is_file():
                    raise FileNotFoundError(f"--loss {spec!r}: {name} {key}={options[key]}: no such file")
        missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in options]
        if missing:
            raise ValueError(f"--loss {spec!r}: {name} needs {', '.join(f'{k}=...' for k in missing)}")
        terms.append(Term(name, 1.0 if weight is None else weight, tuple(sorted(options.items()))))
    return terms


def canonical_loss(spec: str) -> str:
    """``spec`` as the log and the run's settings record it."""
    return "+".join(map(str, parse_loss(spec)))


def loss_needs(spec: str) -> frozenset[str]:
    """What the objectives of ``spec`` read beyond ``Batch.targets`` (the trainer precomputes it)."""
    return frozenset().union(*(OBJECTIVES[t.name].needs for t in parse_loss(spec)))


def loss_files(spec: str) -> list[str]:
    """``PATH sha256:HASH`` of each input file the objectives of ``spec`` read: part of a run's settings, since
    new content under the same name changes the weights."""
    paths = [dict(t.options)[key] for t in parse_loss(spec) for key in OBJECTIVES[t.name].files
             if key in dict(t.options)]
    return [f"{path} sha256:{sha256_file(path)[:16]}" for path in paths]


class WeightedSum(Objective):
    """Several objectives with weights: the loss is the weighted sum, the parts are every objective's parts."""

    def __init__(self, terms: list[tuple[float, Objective]]):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.objectives = torch.nn.ModuleList([o for _, o in terms])
        self.needs = frozenset().union(*(o.needs for o in self.objectives))

    def bind(self, teacher, cache_dir=None, seed: int = 42) -> None:
        for o in self.objectives:
            o.bind(teacher, cache_dir, seed)

    def forward(self, student, batch: Batch) -> LossOutput:
        total, parts = None, {}
        for weight, objective in zip(self.weights, self.objectives):
            out = objective(student, batch)
            parts.update(out.parts)
            total = weight * out.loss if total is None else total + weight * out.loss
        return LossOutput(total, parts)


def build_loss(spec: str, max_length: int | None = 180, chunk_size: int | None = 16) -> Objective:
    """The objective of a ``--loss`` spec (one objective of weight 1 is returned as is); ``.spec`` holds the
    canonical spec."""
    terms = parse_loss(spec)
    built = [(t.weight, OBJECTIVES[t.name](max_length=max_length, chunk_size=chunk_size, **dict(t.options)))
             for t in terms]
    loss = built[0][1] if len(built) == 1 and built[0][0] == 1 else WeightedSum(built)
    loss.spec = "+".join(map(str, terms))
    return loss
