"""Merging per-language result lists into one multilingual ranking.

Baselines that search each language separately (BM25 on each language's index,
or query translation) give one list per language; KD-SPD's paper (section 4.3.1)
merges them two ways, both here behind one call in the spirit of ranx's
``fuse(runs, norm, method)``:

* ``rr``: round robin. Each round visits the languages in a random order and takes
  the next unseen document from each; the order is a fresh permutation per round,
  drawn from an RNG seeded by ``(seed, qid)``, so a fused run is reproducible and
  does not depend on the order in which the lists were given (named lists are
  visited in sorted-name order before shuffling).
* ``minmax``: score merging. Each list's scores are min-max normalised to [0, 1] per
  query, then the lists are merged and sorted by normalised score. Done with ranx
  (``norm="min-max", method="max"``): for disjoint lists (a document lives in one
  language) CombMAX of the normalised scores *is* the union sorted by normalised
  score. A list whose scores for a query are all equal (e.g. a single hit)
  normalises to 0, as in ranx.
* ``rrf``: reciprocal rank fusion (ranx, ``k=60``), not in the paper, for comparison.

Ties (``minmax``, ``rrf``): every language's top document normalises to 1.0 (and
gets 1/(k+1) from RRF), and trec_eval breaks score ties by descending docid, which
would put the same language (here the last in alphabetical order) first for every
query. So ties are broken at random and written into the scores: fused scores are
taken to the 6 decimals of a TREC run (``io.write_run``), documents whose scores
agree there are tied, each tie group is shuffled (after sorting it by docid) with
an RNG seeded by ``(seed, qid)`` as round robin's, group after group in descending
score order, and scores are lowered by as few millionths as it takes to make them
strictly decrease down the ranking. trec_eval and pytrec_eval then read back
exactly this order; the order of documents whose scores differ is never changed.
The result depends on the documents and scores only, not on the order or the names
of the lists, and a deeper cut extends a shallower one. The unnormalised scores are
not used to break ties: each language's BM25 scores come from its own index,
analyzer and query translation, so comparing them would favour whichever language
scores high, a language bias of its own.

Missing queries: ranx requires every run to hold the same queries, so each list is
padded with empty result lists for the queries it lacks (lists with no hit at all
are dropped); a query missing from one language still gets the other languages'
documents. Queries with no document in any list are absent from the fused run.
Inputs are used as given (not cut); the fused ranking is cut to ``depth``.

Cost: ``rr`` is plain Python. ``minmax``/``rrf`` go through ranx's numba kernels:
the first call in a process loads (or, in a fresh environment, compiles: ~1 min)
them and takes several seconds; later calls are fast.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from ._cli import output_file, run_cli
from .io import RUN_DECIMALS, Run, check_scores, ranked, read_run, write_run

METHODS = ("rr", "minmax", "rrf")
_CODE_WIDTH = 12
_DECIMALS = RUN_DECIMALS  # ties are judged, and broken, on what a run file keeps


def _canonical(runs) -> list[tuple[str, Mapping[str, Mapping[str, float]]]]:
    if isinstance(runs, Mapping):
        items = sorted(((str(k), v) for k, v in runs.items()), key=lambda kv: kv[0])
    else:
        items = [(str(i), r) for i, r in enumerate(runs)]
    if not items:
        raise ValueError("no runs to fuse")
    for name, r in items:
        if not isinstance(r, Mapping):
            raise TypeError(f"run {name!r}: expected {{qid: {{docid: score}}}}, got {type(r).__name__}")
        check_scores(r, f"run {name!r}")  # min-max would spread NaN over the whole list
    return items


def _rng(seed: int, qid: str) -> random.Random:
    """The per-query RNG of round robin and of tie breaking; str seeds hash with SHA-512: stable across processes."""
    return random.Random(f"{seed}\t{qid}")


def _micro(score: float) -> int:
    """``score`` in units of the last decimal a run file keeps."""
    return round(score * 10 ** _DECIMALS)


def _break_ties(docs: Mapping[str, float], rng: random.Random, depth: int | None) -> dict[str, float]:
    """The top ``depth`` of ``docs`` (all when None), every tie put in random order and that order written into
    the scores, so that trec_eval reads it back instead of ordering ties by docid (module docstring: Ties).

    Returned in rank order, with strictly decreasing scores on the 6-decimal grid of a run file.
    """
    groups: dict[int, list[str]] = {}
    for d, s in docs.items():
        groups.setdefault(_micro(s), []).append(d)
    out: dict[str, float] = {}
    last = None
    for score in sorted(groups, reverse=True):
        group = sorted(groups[score])  # the shuffle's input must not depend on the order the lists came in
        rng.shuffle(group)
        for d in group:
            last = score if last is None else min(score, last - 1)
            out[d] = last / 10 ** _DECIMALS
            if depth and len(out) == depth:
                return out
    return out


def _qids(items) -> list[str]:
    seen: dict[str, None] = {}
    for _, r in items:
        for q in r:
            seen.setdefault(q, None)
    return list(seen)


def round_robin(lists: Sequence[Mapping[str, float]], rng: random.Random, depth: int | None = 100) -> list[str]:
    """Interleave ranked lists: per round a random permutation of the lists, the next unseen doc from each.

    A document already taken from another list is skipped (first occurrence wins)
    and that list moves on to its next unseen document; exhausted lists are skipped.
    """
    queues = [[d for d, _ in ranked(docs)] for docs in lists]
    pos = [0] * len(queues)
    taken: dict[str, None] = {}
    limit = depth if depth else sum(map(len, queues))
    while len(taken) < limit:
        progressed = False
        for i in rng.sample(range(len(queues)), len(queues)):
            q = queues[i]
            while pos[i] < len(q) and q[pos[i]] in taken:
                pos[i] += 1
            if pos[i] < len(q):
                taken[q[pos[i]]] = None
                pos[i] += 1
                progressed = True
                if len(taken) >= limit:
                    break
        if not progressed:
            break
    return list(taken)


def _ranx_fuse(items, qids: list[str], method: str, rrf_k: int, depth: int | None) -> Run:
    from ranx import Run as RanxRun, fuse as ranx_fuse, normalize as ranx_normalize
    from ranx.fusion import rrf as ranx_rrf

    # ranx stores docids as numpy "<U{longest docid}" arrays and numba compiles its
    # kernels per width (~20 s each on first sight), so docids go in as fixed-width
    # surrogates: one compilation, cached on disk, whatever the collection's ids.
    code: dict[str, str] = {}
    padded = []
    for _, r in items:
        if not any(r.get(q) for q in qids):
            continue  # no hit at all: contributes nothing, and ranx cannot build an empty Run
        padded.append({q: {code.setdefault(str(d), f"{len(code):0{_CODE_WIDTH}d}"): float(s)
                           for d, s in r.get(q, {}).items()} for q in qids})
    if not padded:
        return {}
    if len(code) >= 10 ** _CODE_WIDTH:
        raise ValueError(f"more than {10 ** _CODE_WIDTH - 1} distinct documents to fuse")
    docid = {c: d for d, c in code.items()}
    with warnings.catch_warnings():
        # ranx's numba kernels warn about an unsafe uint64 -> int64 cast on every call.
        warnings.filterwarnings("ignore", module=r"ranx(\..*)?$")
        warnings.filterwarnings("ignore", message=".*unsafe cast.*")
        ranx_runs = [RanxRun(p) for p in padded]
        if method == "minmax":
            if len(ranx_runs) == 1:
                fused = ranx_normalize(ranx_runs[0], "min-max")
            else:
                fused = ranx_fuse(runs=ranx_runs, norm="min-max", method="max")
        else:
            if len(ranx_runs) == 1:
                fused = ranx_rrf(ranx_runs, k=rrf_k)
            else:
                fused = ranx_fuse(runs=ranx_runs, norm=None, method="rrf", params={"k": rrf_k})
        out = {q: _top(fused.run[q], depth) for q in qids if q in fused.run}
    return {q: {docid[c]: s for c, s in docs.items()} for q, docs in out.items() if docs}


def _top(docs, depth: int | None) -> dict[str, float]:
    """The top ``depth`` entries (and any ties with the last, to 6 decimals) of a ranx typed dict sorted by score.

    Reading a numba typed dict from Python costs a dispatch per value (Run.to_dict()
    takes ~5 s per 300k entries) while iterating its keys is cheap, so only what
    survives the depth cut is read. ranx returns fused runs sorted by descending
    score; should that ever not hold, everything is read.
    """
    out: dict[str, float] = {}
    last = None
    for c in docs:
        s = float(docs[c])
        if last is not None and s > last:
            return {k: float(docs[k]) for k in docs}  # not sorted after all
        if depth and len(out) >= depth and _micro(s) < _micro(last):
            break
        out[c] = last = s
    return out


def fuse(runs, method: str = "rr", depth: int | None = 100, seed: int = 0, rrf_k: int = 60,
         norm_depth: int | None = None) -> Run:
    """Fuse per-language runs (``{name: Run}`` or ``[Run, ...]``) into one run of ``depth`` docs per query.

    ``rr`` scores are ``depth - rank`` (rank from 0; the list length when ``depth`` is
    None) so TREC tools sort them back into round-robin order; ``minmax`` keeps the
    normalised scores, ``rrf`` the RRF scores, both to 6 decimals and lowered by a few
    millionths where ties are broken. See the module docstring for the definitions,
    the seeding, ties, and missing-query and duplicate handling.

    ``norm_depth`` (``minmax`` only): normalise each list by the lowest and highest score of its top
    ``norm_depth`` instead of all of it; documents below score under 0. Fusing deeper lists then
    *extends* the run fused from their top ``norm_depth`` (same documents, order and scores at the top),
    which is how a deep run of a top-100 "+ Score" row is made (the language-bias analysis). Normalising
    each whole deep list instead makes another system: a short list is scaled by its very worst document.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {METHODS}")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be a positive integer or None, got {depth}")
    if norm_depth is not None and (method != "minmax" or norm_depth < 1):
        raise ValueError(f"norm_depth is a positive integer of the minmax method, got {norm_depth} with {method!r}")
    if method == "rrf" and not rrf_k > 0:  # 1 / (k + rank) with k <= -1 divides by zero or flips signs
        raise ValueError(f"rrf_k must be positive, got {rrf_k}")
    items = _canonical(runs)
    qids = _qids(items)
    if method == "rr":
        out: Run = {}
        for q in qids:
            docs = round_robin([r.get(q, {}) for _, r in items], _rng(seed, q), depth)
            if docs:
                top = depth if depth else len(docs)
                out[q] = {d: float(top - i) for i, d in enumerate(docs)}
        return out
    if norm_depth is not None:
        fused = {q: docs for q in qids if (docs := _minmax_over_top(items, q, norm_depth))}
    else:
        fused = _ranx_fuse(items, qids, method, rrf_k, depth)
    return {q: _break_ties(docs, _rng(seed, q), depth) for q, docs in fused.items()}


def _minmax_over_top(items, q: str, norm_depth: int) -> dict[str, float]:
    """CombMAX of each list's scores for ``q`` min-max normalised over its top ``norm_depth`` (ranx's min-max,
    all-equal lists to 0, when a list is no longer than that)."""
    merged: dict[str, float] = {}
    for _, r in items:
        docs = r.get(q)
        if not docs:
            continue
        top = [s for _, s in ranked(docs, norm_depth)]
        lo, span = min(top), max(top) - min(top)
        for d, s in docs.items():
            v = (s - lo) / span if span > 0 else min(s - lo, 0.0)
            if v > merged.get(d, -math.inf):
                merged[d] = v
    return merged


# ------------------------------------------------------------------------ CLI
def _named_runs(items: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, p = item.partition("=")
        if not sep or "/" in name or not p:
            name, p = Path(item).stem, item
        if name in out:
            raise ValueError(f"two runs named {name!r} ({out[name]} and {p}); name them with name=path")
        out[name] = Path(p)
    return out


def _positive_int(value: str) -> int:
    """argparse type of --depth and --rrf-k: 0 keeps nothing, and RRF's 1 / (k + rank) needs k > 0."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pyserini_kdspd.fusion",
        description="Merge per-language TREC runs into one run (round robin, min-max score merging, RRF).")
    ap.add_argument("--runs", nargs="+", required=True,
                    help="TREC runs, one per language: path or name=path (name = file stem by default; "
                         "round robin's random order depends on names, not on argument order)")
    ap.add_argument("--method", choices=METHODS, default="rr")
    ap.add_argument("--depth", type=_positive_int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rrf-k", type=_positive_int, default=60)
    ap.add_argument("--output", type=output_file, required=True)
    ap.add_argument("--tag", default=None, help="run tag (default: fused-METHOD)")
    args = ap.parse_args(argv)
    return run_cli(lambda: _main(args))


def _main(args) -> None:
    """Read, fuse and write the runs named by ``args``."""
    runs = {name: read_run(p) for name, p in _named_runs(args.runs).items()}
    fused = fuse(runs, args.method, args.depth, args.seed, args.rrf_k)
    write_run(args.output, fused, tag=args.tag or f"fused-{args.method}", depth=args.depth)
    n = sum(map(len, fused.values()))
    print(f"{args.output}: {len(fused)} queries, {n} documents ({args.method}, depth {args.depth})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
