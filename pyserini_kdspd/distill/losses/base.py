"""The objectives' contract: a :class:`Batch` of bitext pairs with teacher targets in, a
:class:`LossOutput` (a scalar and its named parts) out, and a registry of objectives by name.

An objective is an :class:`Objective` (an ``nn.Module``) called as ``objective(student, batch)``.
It runs the student itself through :meth:`Batch.student_vectors`, which runs the student once per
batch however many objectives ask, so combining objectives costs no second forward pass and every
objective sees the same vectors.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ...runtime import length_sorted_batches
from ..bitext import ENGLISH
from ..teacher import Teacher

QUERIES = "queries"  # what an objective may need beyond ``Batch.targets`` (see Objective.needs)


@dataclass
class Batch:
    """Pairs of one training step: ``texts[i]`` (language ``langs[i]``) should map to ``targets[i]``,
    the teacher's vector of its English side ``english[i]``.

    ``queries[i]`` is the teacher's *query* vector of ``english[i]`` (filled by the trainer for
    objectives that need it); ``step`` (0-based) lets an objective that draws data of its own
    (question-answer pairs) draw the same at a resumed step.
    """

    texts: list[str]
    langs: list[str]
    english: list[str]
    targets: torch.Tensor  # (B, teacher_dim) float32
    queries: torch.Tensor | None = None  # (B, teacher_dim) float32
    step: int = 0
    _vectors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.texts)

    def foreign(self) -> list[int]:
        """Rows whose text is not English (the others are English self-pairs: text == english)."""
        return [i for i, lang in enumerate(self.langs) if lang != ENGLISH]

    def student_vectors(self, student, max_length: int | None = 180, chunk_size: int | None = 16,
                        english: bool = False) -> torch.Tensor:
        """S(texts), or with ``english`` S(english) of every pair, with gradients; computed once per batch.

        Asked first for ``english``, the texts and the English sides of the non-English pairs run in one
        length-sorted pass (KD-Encoder's, so its loss is the one it always was); an English self-pair's
        English vector is its text's.
        """
        memo = self._vectors.setdefault((max_length, chunk_size), {})
        foreign = self.foreign()
        en_texts = [self.english[i] for i in foreign]
        if "texts" not in memo:
            if english and foreign:
                pred = embed(student, list(self.texts) + en_texts, list(self.langs) + [ENGLISH] * len(foreign),
                             max_length, chunk_size)
                memo["texts"], memo["foreign"] = pred[:len(self)], pred[len(self):]
            else:
                memo["texts"] = embed(student, self.texts, self.langs, max_length, chunk_size)
        if not english or not foreign:
            return memo["texts"]
        if "foreign" not in memo:
            memo["foreign"] = embed(student, en_texts, [ENGLISH] * len(foreign), max_length, chunk_size)
        index = torch.tensor(foreign, device=memo["texts"].device)
        return memo["texts"].index_copy(0, index, memo["foreign"])


def no_autocast(device) -> torch.autocast:
    """Full precision inside a step's bf16 autocast: for in-batch scores (a matmul in bf16 would round the
    cosines that a small temperature then magnifies) and for the teacher, whose own precision setting
    decides and whose cached vectors must not depend on where they were computed."""
    return torch.autocast(torch.device(device).type, enabled=False)


class LossOutput(NamedTuple):
    """``loss`` is what the trainer minimises; ``parts`` are its named components (unweighted), logged per step."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]


def embed(student, texts: list[str], langs: list[str], max_length: int | None = None,
          chunk_size: int | None = 16) -> torch.Tensor:
    """Student vectors of ``texts`` with gradients, in input order.

    The texts run in length-sorted chunks of ``chunk_size`` (None: one padded pass).
    A KD-SPD step mixes 15 languages, and one padded pass would pad every sentence to
    the step's longest; chunking gives the same vectors and loss with less padding
    (the README's training notes give the time it saves).
    """
    lang_ids = student.lang_ids(langs)
    if not chunk_size or len(texts) <= chunk_size:
        enc = student.tokenize(texts, max_length=max_length)
        return student(enc["input_ids"], enc["attention_mask"], lang_ids)
    lengths = [len(ids) for ids in student.tokenize(texts, max_length=max_length, padding=False)["input_ids"]]
    batches = [torch.from_numpy(idx) for idx in length_sorted_batches(lengths, chunk_size)]
    outs = []
    for idx in batches:
        enc = student.tokenize([texts[i] for i in idx.tolist()], max_length=max_length)
        outs.append(student(enc["input_ids"], enc["attention_mask"], lang_ids[idx]))
    order = torch.cat(batches)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return torch.cat(outs)[inverse]


class Objective(nn.Module):
    """One distillation objective: ``objective(student, batch) -> LossOutput``.

    Subclasses set ``name`` (the ``--loss`` name), ``needs`` (``{"queries"}`` when they read
    ``batch.queries``: the trainer then precomputes and caches the teacher's query vectors too) and
    ``files`` (options that name input files, hashed into the run's settings). Options of the
    ``--loss`` spec are the constructor's keyword arguments after ``max_length`` and ``chunk_size``.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, max_length: int | None = 180, chunk_size: int | None = 16):
        super().__init__()
        self.max_length = max_length
        self.chunk_size = chunk_size

    def bind(self, teacher: Teacher, cache_dir=None, seed: int = 42) -> None:
        """Called by the trainer before training; objectives that run the teacher themselves keep it here."""

    def vectors(self, student, batch: Batch, english: bool = False) -> torch.Tensor:
        return batch.student_vectors(student, self.max_length, self.chunk_size, english).float()

    def queries(self, batch: Batch, device) -> torch.Tensor:
        if batch.queries is None:
            raise ValueError(f"{self.name} reads the teacher's query vectors of the English sides (Batch.queries), "
                             f"which this batch lacks: DistillationTrainer fills them for objectives that need them")
        return batch.queries.to(device).float()


OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Make ``cls`` selectable as ``--loss cls.name``."""
    if not cls.name or cls.name in OBJECTIVES:
        raise ValueError(f"{cls.__name__}: objective name {cls.name!r} is empty or taken")
    OBJECTIVES[cls.name] = cls
    return cls


_QUERY_SIDES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def query_teacher(teacher: Teacher) -> Teacher:
    """The teacher's query encoder, as a :class:`Teacher` whose "documents" are queries.

    It is ``teacher`` itself when queries and documents are encoded alike (same prefix, as for
    MiniLM and mpnet; ANCE's two sides share one model), so no vector is computed twice; otherwise
    (e5's ``query: `` / ``passage: ``) a second instance with the query prefix, whose fingerprint
    (it hashes the prefix) keeps its cached vectors apart. One per teacher.
    """
    settings = teacher.settings
    query, passage = settings.get("query_prefix") or "", settings.get("passage_prefix") or ""
    if teacher.kind == "ance" or query == passage:
        return teacher
    if teacher not in _QUERY_SIDES:
        _QUERY_SIDES[teacher] = Teacher(teacher.name, pooling=settings["pooling"], l2_norm=settings["l2_norm"],
                                        query_prefix=query, passage_prefix=query, max_length=teacher.max_length,
                                        batch_size=teacher.batch_size, precision=teacher.precision,
                                        device=teacher.device)
    return _QUERY_SIDES[teacher]
