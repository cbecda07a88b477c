"""KD-SPD speed and memory on this machine, printed as one Markdown table.

    python benchmarks/kdspd.py                       # models/kdspd against its own encoder with mean pooling
    python benchmarks/kdspd.py --stock --bf16-map    # + stock pyserini.encode wall time, bf16-vs-fp32 MAP

Rows (issue 3): document-encoding throughput of KD-SPD and of its encoder alone
(mean pooling) on the same LAReQA sentences with the same length-sorted batches;
achieved GFLOP/s (analytic FLOPs of the batches actually run) against the
machine's measured matmul peak in the same precision; optionally the stock
``python -m pyserini.encode`` wall time and the MAP of a bf16 index against the
fp32 one; training seconds per step and peak memory (read from the trained
models' ``training_log.json``, i.e. measured during the real run); query
encoding + FAISS search latency (p50/p95) on the LAReQA index.
Nothing here is a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(precision: str, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of a square matmul, the ceiling a transformer on this CPU can approach."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def student_flops(student, widths: list[tuple[int, int]]) -> float:
    """Forward FLOPs (2 x multiply-adds) of the encoder (+ decoder) over padded batches (rows, width)."""
    cfg = student.encoder.config
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    ffn = cfg.intermediate_size
    total = 0
    for rows, n in widths:
        enc = layers * (n * (4 * d * d + 2 * d * ffn) + 2 * n * n * d)
        dec = 0
        if student.decoder is not None:
            c = student.config
            steps = c.decoder_layers
            l, f = c.prompt_length, (c.ffn_dim or 4 * d)
            dec = steps * (2 * l * d * d + 2 * n * d * d + 2 * l * n * d + 2 * l * d * f)
        total += rows * (enc + dec)
    return 2.0 * total


def padded_widths(student, texts, batch_size: int) -> list[tuple[int, int]]:
    """(rows, width) of the batches ``Student.encode`` runs (the same length-sorted batching helper)."""
    from pyserini_kdspd.runtime import length_sorted_batches

    lengths = np.array([len(x) for x in student.tokenize(texts, padding=False)["input_ids"]])
    return [(len(idx), int(lengths[idx].max())) for idx in length_sorted_batches(lengths, batch_size)]


def throughput(student, texts, langs, batch_size: int, precision: str) -> tuple[float, float]:
    student.encode(texts[:batch_size], langs[:batch_size], batch_size=batch_size, precision=precision)  # warm-up
    t0 = time.perf_counter()
    student.encode(texts, langs, batch_size=batch_size, precision=precision)
    dt = time.perf_counter() - t0
    return len(texts) / dt, student_flops(student, padded_widths(student, texts, batch_size)) / dt / 1e9


def stock_encode_seconds(model_dir: Path, corpus: Path, batch_size: int) -> float:
    """Wall time of the driver's own stock ``pyserini.encode`` command (same encoder arguments) at ``batch_size``."""
    from pyserini_kdspd._java import java_env
    from pyserini_kdspd.search.dense import DenseModel

    model = DenseModel.from_name("kdspd", str(model_dir), doc_batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "text", "lang",
               "output", "--embeddings", tmp, "--to-faiss", "encoder", *model.encode_args()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=java_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            raise RuntimeError(f"stock pyserini.encode failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        return time.perf_counter() - t0


def bf16_map_delta(model_dir: Path, student, texts, langs, docids, topics: Path, qrels: Path,
                   batch_size: int) -> tuple[float, float]:
    """MAP@100 of flat IP indexes built from fp32 and from bf16 document vectors (same queries)."""
    import faiss

    from pyserini_kdspd import io
    from pyserini_kdspd.encoders import KdspdQueryEncoder
    from pyserini_kdspd.evaluate import evaluate

    q = io.read_topics(topics)
    qenc = KdspdQueryEncoder(str(model_dir))
    qids = list(q)
    qv = np.stack([qenc.encode(q[i]) for i in qids]).astype(np.float32)
    maps = []
    for prec in ("fp32", "bf16"):
        vecs = student.encode(texts, langs, batch_size=batch_size, precision=prec)
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        scores, rows = index.search(qv, 100)
        run = {qid: {docids[r]: float(s) for s, r in zip(scores[i], rows[i])} for i, qid in enumerate(qids)}
        maps.append(evaluate(run, str(qrels))["map"])
    return maps[0], maps[1]


def search_latency(model_dir: Path, index_dir: Path, topics: Path, n: int = 200) -> tuple[list[float], list[float]]:
    from pyserini.search.faiss import FaissSearcher

    from pyserini_kdspd import io
    from pyserini_kdspd.encoders import KdspdQueryEncoder

    qenc = KdspdQueryEncoder(str(model_dir))
    searcher = FaissSearcher(str(index_dir), qenc)
    queries = list(io.read_topics(topics).values())[:n]
    searcher.search(queries[0], k=100)
    enc_ms, total_ms = [], []
    for text in queries:
        t0 = time.perf_counter()
        vec = qenc.encode(text)
        t1 = time.perf_counter()
        searcher.index.search(np.asarray(vec, dtype=np.float32).reshape(1, -1), 100)
        t2 = time.perf_counter()
        enc_ms.append((t1 - t0) * 1e3)
        total_ms.append((t2 - t0) * 1e3)
    return enc_ms, total_ms


def pyserini_auto_speed(name: str, texts: list[str], batch_size: int) -> tuple[float, float, float]:
    """Sentences/s of Pyserini's unmodified ``AutoDocumentEncoder`` as ``pyserini.encode`` runs it (corpus
    order, batches of ``batch_size``, autograd on) and of the same object in length-sorted batches without
    autograd; and the largest absolute difference of their vectors. This is what the baseline rows (mDPR,
    teacher) give up by running stock Pyserini; the plugin changes nothing of that class."""
    from pyserini.encode import AutoDocumentEncoder

    from pyserini_kdspd.models import model_settings, resolve_model
    from pyserini_kdspd.runtime import encode_sorted

    s = model_settings(name)
    prefix = (s.get("passage_prefix") or "").rstrip() or None
    enc = AutoDocumentEncoder(resolve_model(name), device="cpu", pooling=s["pooling"], l2_norm=s["l2_norm"],
                              prefix=prefix)
    t0 = time.perf_counter()
    stock = np.concatenate([enc.encode(texts[i:i + batch_size], max_length=256)
                            for i in range(0, len(texts), batch_size)])
    t_stock = time.perf_counter() - t0
    lengths = [len(x) for x in enc.tokenizer([f"{prefix} {t}" if prefix else t for t in texts],
                                             truncation=True, max_length=256)["input_ids"]]
    t0 = time.perf_counter()
    with torch.inference_mode():
        fast = encode_sorted(lengths, lambda idx: enc.encode([texts[i] for i in idx], max_length=256),
                             batch_size, stock.shape[1])
    t_fast = time.perf_counter() - t0
    return len(texts) / t_stock, len(texts) / t_fast, float(np.abs(stock - fast).max())


def pct(xs, p):
    return float(np.percentile(np.asarray(xs), p))


class Rows(list):
    """Table rows, each printed the moment it is measured."""

    def append(self, row) -> None:
        super().append(row)
        print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)

    def extend(self, rows) -> None:
        for r in rows:
            self.append(r)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models/kdspd", help="trained KD-SPD folder")
    p.add_argument("--kd-encoder", type=Path, default=ROOT / "models/kd-encoder",
                   help="trained KD-Encoder folder (training-step row); skipped when absent")
    p.add_argument("--corpus", type=Path, default=ROOT / "collections/lareqa/corpus/corpus.jsonl")
    p.add_argument("--topics", type=Path, default=ROOT / "topics/lareqa.en.tsv")
    p.add_argument("--qrels", type=Path, default=ROOT / "qrels/lareqa.txt")
    p.add_argument("--index", type=Path, default=ROOT / "indexes/lareqa/kdspd", help="FAISS index for latency")
    p.add_argument("--sentences", type=int, default=0, help="first N corpus sentences (0 = all 13,014)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="texts per forward pass (default: $PYSERINI_KDSPD_BATCH_SIZE, else 64)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: $PYSERINI_KDSPD_THREADS, else torch's default)")
    p.add_argument("--precisions", default="auto",
                   help="comma list of fp32, bf16; auto = fp32, plus bf16 where the hardware has native bf16")
    p.add_argument("--stock", action="store_true", help="also time stock python -m pyserini.encode (batch 512)")
    p.add_argument("--bf16-map", action="store_true", help="also compare MAP of bf16 and fp32 indexes")
    p.add_argument("--pyserini-auto", metavar="MODEL", default=None,
                   help="also time Pyserini's own AutoDocumentEncoder on MODEL (e.g. multilingual-e5-small, the "
                        "offline mDPR) in corpus order vs length-sorted without autograd; needs no trained student")
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from pyserini_kdspd import io
    from pyserini_kdspd.runtime import bf16_supported, resolve
    from pyserini_kdspd.spd import Student, StudentConfig
    from pyserini_kdspd.spd.student import CONFIG_NAME

    settings = resolve(batch_size=a.batch_size, threads=a.threads)
    settings.apply_threads()

    records = list(io.read_jsonl(a.corpus))
    if a.sentences:
        records = records[:a.sentences]
    texts, langs, docids = [r["contents"] for r in records], [r["lang"] for r in records], [r["id"] for r in records]
    if a.pyserini_auto:
        stock, fast, diff = pyserini_auto_speed(a.pyserini_auto, texts, settings.batch_size)
        print("| benchmark | value | note |\n|---|---:|---|", flush=True)
        Rows().extend([
            (f"stock Pyserini AutoDocumentEncoder ({a.pyserini_auto}, fp32), corpus order",
             f"{stock:.1f} sentences/s", f"{len(texts)} sentences, batch {settings.batch_size}, as pyserini.encode runs it"),
            ("the same class, length-sorted, no autograd", f"{fast:.1f} sentences/s",
             f"{fast / stock:.2f}x; max |difference| {diff:.1e}; what the baseline rows forgo by running stock Pyserini"),
        ])
    if not (a.model / CONFIG_NAME).is_file():
        print(f"\n[skip] student rows: no trained KD-SPD folder at {a.model}")
        return 0
    spd = Student.from_pretrained(a.model).eval()
    mean = Student(StudentConfig(encoder=spd.config.encoder, student="mean", languages=spd.config.languages),
                   spd.encoder, spd.tokenizer).eval()
    precisions = (["fp32"] + (["bf16"] if bf16_supported() else []) if a.precisions == "auto"
                  else [x.strip() for x in a.precisions.split(",") if x.strip()])
    print(f"\n{len(texts)} LAReQA sentences, batch {settings.batch_size}, length-sorted; model {a.model}\n")
    print("| benchmark | value | note |\n|---|---:|---|", flush=True)
    rows = Rows()  # printed as they come: a late failure keeps what was measured
    rows.append(("machine", f"{torch.get_num_threads()} threads, native bf16: {bf16_supported()}", ""))
    peaks = {prec: matmul_peak(prec) for prec in precisions}
    for prec, g in peaks.items():
        rows.append((f"matmul peak {prec} (2048^2)", f"{g:.0f} GFLOP/s", ""))
    for prec in precisions:
        r_mean, g_mean = throughput(mean, texts, langs, settings.batch_size, prec)
        r_spd, g_spd = throughput(spd, texts, langs, settings.batch_size, prec)
        rows.extend([
            (f"encoder alone, mean pooling, {prec}", f"{r_mean:.1f} sentences/s",
             f"{g_mean:.0f} GFLOP/s = {g_mean / peaks[prec]:.0%} of peak"),
            (f"KD-SPD (l={spd.config.prompt_length}, N={spd.config.decoder_layers}), {prec}",
             f"{r_spd:.1f} sentences/s", f"{g_spd:.0f} GFLOP/s = {g_spd / peaks[prec]:.0%} of peak"),
            (f"KD-SPD / encoder alone, {prec}", f"{r_spd / r_mean:.2f}x", "target >= 0.85x"),
        ])
    if a.stock:
        sec = stock_encode_seconds(a.model, a.corpus.parent, 512)
        rows.append(("stock pyserini.encode --batch-size 512 (incl. start-up)", f"{len(records) / sec:.1f} sentences/s",
                     f"{sec:.0f} s for {len(records)} sentences"))
    if a.bf16_map:
        m32, m16 = bf16_map_delta(a.model, spd, texts, langs, docids, a.topics, a.qrels, settings.batch_size)
        rows.append(("MAP fp32 index vs bf16 index", f"{m32:.4f} vs {m16:.4f}", f"abs. difference {abs(m32 - m16):.4f}"))
    for label, folder in (("KD-SPD", a.model), ("KD-Encoder", a.kd_encoder)):
        log_file = folder / "training_log.json"
        if log_file.is_file():
            log = json.loads(log_file.read_text())
            steps = log.get("step_seconds") or [0]
            rows.append((f"training {label}: s/step (median, p90), peak RSS",
                         f"{statistics.median(steps):.2f} s, {pct(steps, 90):.2f} s",
                         f"{log.get('peak_rss_mb', float('nan')):.0f} MB, {log.get('steps')} steps, "
                         f"{log.get('precision')}, {log.get('threads')} thread(s)"))
    if (a.index / "index").is_file():
        enc, tot = search_latency(a.model, a.index, a.topics)
        rows.append(("query encode (teacher) p50 / p95", f"{pct(enc, 50):.1f} / {pct(enc, 95):.1f} ms", ""))
        rows.append(("query encode + FAISS search top-100 p50 / p95", f"{pct(tot, 50):.1f} / {pct(tot, 95):.1f} ms",
                     f"flat IP index, {a.index}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
