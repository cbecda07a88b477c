"""The cost model of encoding at scale (issue 12): measured here, projected to mTREC's 35.2M passages.

    python benchmarks/scale.py --student models/kdspd                  # the measurement (quiet machine)
    python benchmarks/scale.py --student untrained --docs 48           # a smoke run of every row
    python benchmarks/scale.py --readme                                # README block <!-- scale --> from the table

Each model (the KD-SPD student, the English teacher) encodes the same passages in a single process
(all cores) and through ``pyserini_kdspd.scale.ray_encode`` on a local Ray with 1 actor (all cores)
and with 2 actors (cores / 2 threads each). Each actor times its own model load and its encoding
and reads its peak RSS, so the per-worker rate excludes Ray's start-up; the wall-clock rate
includes it. Per core = per worker / threads.

The projection assumes throughput grows linearly with workers (Ray Data shares nothing between
actors but the input and output files; the 1-vs-2-actor rows show what one machine gets). Index
build and search costs are not measured here: ``benchmarks/indexes.py --synthetic N`` measures them
for every index type over the same kind of vectors. ``--student untrained`` builds the paper's
default KD-SPD architecture on the packaged backbone, untrained: the same FLOPs as a trained
student. Nothing here is a test: the figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import shlex
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.indexes import shown  # noqa: E402
from pyserini_kdspd._cli import output_file, rewrite_readme_block  # noqa: E402
from pyserini_kdspd.runtime import peak_rss_mb  # noqa: E402
from pyserini_kdspd.scale.ray_encode import EncodeBatches, EncoderSpec, encode_corpus, start_ray  # noqa: E402

MTREC_PASSAGES = 35_200_000
MARKER = "scale"
TABLE = ROOT / "runs" / "benchmarks" / "scale.md"


def passages(source: str, n: int, data_dir) -> list[dict]:
    """``n`` records ``{id, text, lang}``: distinct DL20 BM25 passages (English MS MARCO, mTREC's source) or
    every k-th LAReQA sentence."""
    from pyserini_kdspd.paths import data_dir as find_data

    data = find_data(data_dir, required=True)
    if source == "dl20":
        seen = {}
        for query in json.loads((data / "trec-dl20" / "retrieve_results_dl20.json").read_text(encoding="utf-8")):
            for hit in query["hits"]:
                seen.setdefault(str(hit["docid"]), hit["content"])
        recs = [{"id": f"en-{pid}", "text": text, "lang": "en"} for pid, text in seen.items()]
    else:
        from pyserini_kdspd.data.lareqa import load_lareqa

        recs = [{"id": s.docid, "text": s.text, "lang": s.lang} for s in load_lareqa(data, download=False).sentences]
    step = max(1, len(recs) // n)
    return recs[::step][:n]


class TimedEncode(EncodeBatches):
    """The actors' own class, timing its load and its batches and writing them, with its peak RSS, to
    ``log_dir/<pid>.json`` after every batch (pickled by value: it lives in ``__main__``)."""

    log_dir = None

    def __init__(self, *args):
        t0 = time.perf_counter()
        super().__init__(*args)
        self.stats = {"pid": os.getpid(), "load": time.perf_counter() - t0, "busy": 0.0, "docs": 0}

    def __call__(self, batch):
        t0 = time.perf_counter()
        out = super().__call__(batch)
        self.stats["busy"] += time.perf_counter() - t0
        self.stats["docs"] += batch.num_rows
        self.stats["rss"] = peak_rss_mb()
        Path(self.log_dir, f"{os.getpid()}.json").write_text(json.dumps(self.stats))
        return out


def single_process(encoder: str, corpus: Path, threads: int) -> dict:
    """One fresh interpreter encoding everything with the actors' own loader (no Ray)."""
    code = ("import json, sys, time; sys.path.insert(0, sys.argv[4]); import benchmarks.scale as b\n"
            "recs = [json.loads(l) for l in open(sys.argv[2], encoding='utf-8')]\n"
            "t0 = time.perf_counter(); enc = b.EncoderSpec.from_name(sys.argv[1], threads=int(sys.argv[3])).load()\n"
            "t1 = time.perf_counter(); enc([r['text'] for r in recs], [r['lang'] for r in recs])\n"
            "print(json.dumps({'load': t1 - t0, 'busy': time.perf_counter() - t1, 'docs': len(recs), "
            "'rss': b.peak_rss_mb()}))")
    proc = subprocess.run([sys.executable, "-c", code, encoder, str(corpus), str(threads), str(ROOT)],
                          capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ray_process(encoder: str, corpus: Path, out: Path, actors: int, threads: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as logs:
        TimedEncode.log_dir = logs
        summary = encode_corpus(corpus, encoder, out, actors=actors, threads=threads, batch_size=batch_size,
                                force=True, udf=TimedEncode)
        workers = [json.loads(p.read_text()) for p in Path(logs).glob("*.json")]
    return {"wall": summary["seconds"], "docs": summary["documents"], "workers": workers}


def fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min" if seconds >= 60 \
        else f"{seconds:.2f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="models/kdspd", help="a KD-SPD folder, or `untrained` (the default architecture)")
    p.add_argument("--teacher", default="all-MiniLM-L6-v2")
    p.add_argument("--texts", choices=("dl20", "lareqa"), default="dl20")
    p.add_argument("--docs", type=int, default=2000, help="passages encoded per configuration")
    p.add_argument("--batch-size", type=int, default=256, help="documents per actor call")
    p.add_argument("--collection", type=int, default=MTREC_PASSAGES, help="passages to project to (mTREC: 35.2M)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64],
                   help="workers (machines like this one) to project to")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", type=output_file, default=TABLE, help="the tables, with the command, CPU and date")
    p.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None, metavar="README",
                   help=f"run nothing: rewrite the block between <!-- {MARKER}:start --> and <!-- {MARKER}:end --> "
                        "of README (default README.md) from --output")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.readme is not None:
        def block() -> str:
            if not args.output.is_file():
                raise FileNotFoundError(f"{args.output}: no table (run the benchmark first)")
            return (f"<!-- written by `python benchmarks/scale.py --readme` from {shown(args.output)}; edits here are "
                    "overwritten -->\n" + args.output.read_text(encoding="utf-8").strip() + "\n")
        return rewrite_readme_block(args.readme, MARKER, block, "encoding cost tables")
    from pyserini_kdspd.runtime import cpu_info

    started = datetime.datetime.now().astimezone()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cores = os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="kdspd-scale-"))
    student = args.student
    if student == "untrained":
        import torch

        from pyserini_kdspd.models import model_settings
        from pyserini_kdspd.spd import Student, StudentConfig

        torch.manual_seed(0)
        prefix = model_settings("multilingual-e5-small")["passage_prefix"] or ""
        student = str(Student.build(StudentConfig(encoder="multilingual-e5-small", passage_prefix=prefix))
                      .save_pretrained(work / "kdspd-untrained"))
    recs = passages(args.texts, args.docs, args.data_dir)
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    from pyserini_kdspd.spd.documents import StudentDocumentEncoder

    tok = StudentDocumentEncoder(student).model.tokenizer
    tokens = np.mean([len(x) for x in tok([r["text"] for r in recs], truncation=True,
                             max_length=EncoderSpec.max_length)["input_ids"]])
    words = np.mean([len(r["text"].split()) for r in recs])
    about = (f"{len(recs):,} {'DL20 BM25 passages (English MS MARCO)' if args.texts == 'dl20' else 'LAReQA sentences'}: "
             f"mean {words:.1f} words, {tokens:.1f} backbone tokens ({'smoke run' if args.docs < 500 else 'measurement'}).")
    print(about + "\n", flush=True)

    import ray

    start_ray(ray)  # one local Ray for every run, as the command starts it
    rows, rate = [], {}
    try:
        for i, (label, encoder) in enumerate((("KD-SPD student", student), (f"teacher ({args.teacher})", args.teacher))):
            s = single_process(encoder, corpus, cores)
            rows.append((label, f"single process, {cores} threads", s["docs"] / (s["load"] + s["busy"]),
                         s["docs"] / s["busy"], s["docs"] / s["busy"] / cores, s["load"], s["rss"]))
            for actors in (1, 2):
                threads = max(1, cores // actors)
                r = ray_process(encoder, corpus, work / f"out-{i}-{actors}", actors, threads, args.batch_size)
                w = r["workers"]
                per_worker = np.mean([x["docs"] / x["busy"] for x in w])
                rows.append((label, f"Ray, {actors} actor{'s' * (actors > 1)} x {threads} thread{'s' * (threads > 1)}",
                             r["docs"] / r["wall"], per_worker, per_worker / threads,
                             np.mean([x["load"] for x in w]), max(x.get("rss", 0) for x in w)))
                rate[label] = per_worker / threads  # per core, from the last (all-actors) run
    finally:
        ray.shutdown()

    lines = ["| model | setup | docs/s (wall, incl. start-up) | docs/s per worker | docs/s per core | "
             "model load (s) | peak RSS per worker (MB) |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {label} | {setup} | {wall:.1f} | {worker:.1f} | {core:.1f} | {load:.1f} | {rss:,.0f} |"
              for label, setup, wall, worker, core, load, rss in rows]
    P = args.collection
    lines += ["", f"Encoding {P:,} passages, projected from the per-core rates above (workers of {cores} cores, "
              "linear scaling):", "",
              "| model | CPU-hours | " + " | ".join(f"{n} worker{'s' * (n > 1)}" for n in args.workers) + " |",
              "|---|---:|" + "---:|" * len(args.workers)]
    for label, per_core in rate.items():
        secs = P / per_core
        lines.append(f"| {label} | {secs / 3600:,.0f} | " + " | ".join(fmt_h(secs / cores / n) for n in args.workers)
                     + " |")
    cpu = cpu_info()
    text = (f"{about} {cpu['model']}, {cpu['cores']} cores, {started:%Y-%m-%d %H:%M %Z}.\n\n"
            f"`python benchmarks/scale.py{''.join(' ' + shlex.quote(a) for a in argv)}`\n\n" + "\n".join(lines) + "\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text + f"\nwritten to {args.output}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
