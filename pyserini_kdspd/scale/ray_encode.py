"""Encode a corpus into Parquet vectors on a pool of Ray Data actors (one model load per actor).

    python -m pyserini_kdspd.scale.ray_encode --corpus collections/lareqa/corpus \\
        --encoder models/kdspd --output vectors/lareqa.kdspd --actors 2

The corpus is a JsonCollection (one ``.jsonl`` file or a folder of them; Pyserini's ``id`` /
``_id`` / ``docid``, ``text`` else ``contents``, and ``lang``) or Parquet with the same columns.
``map_batches`` hands each actor ``--batch-size`` documents at a time; the actor encodes them
exactly as the single-process path does (a KD-SPD folder through the same
:class:`~pyserini_kdspd.spd.documents.StudentDocumentEncoder` that ``pyserini.encode --encoder kdspd``
runs, a packaged or Hugging Face model with Pyserini's pooling, normalisation and prefix through
:class:`~pyserini_kdspd.distill.teacher.Teacher`), with threads = the cluster's CPUs / actors and
precision and forward-pass size from :func:`pyserini_kdspd.runtime.resolve`. The output folder
holds Parquet part files of ``docid`` (string), ``vector`` (list<float32>) and ``lang`` (string),
which :mod:`pyserini_kdspd.index` reads.

Fault tolerance is Ray Data's own: an actor that dies is restarted (``max_restarts``) and its
unfinished batch re-run on a live actor (``max_task_retries``); output files are written per
write task under names fixed by the task, so a retried write replaces its file, and a batch
never reaches a file from an actor that died before returning it. The command checks the
result anyway (every input document exactly once) before it renames ``OUTPUT.partial`` to
``OUTPUT``. Ray is an optional extra (``pip install 'pyserini_kdspd[ray]'``); nothing imports it
until a command runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

EXTRA_HINT = ("Ray Data is an optional extra of pyserini_kdspd; install it with\n"
              "  pip install 'pyserini_kdspd[ray]'        (in a checkout: pip install -e '.[ray]')")
STAMP = "_encoded_with.json"  # a leading "_": Parquet readers of the folder skip it
DEFAULT_BATCH_SIZE = 1024      # documents per actor call; forward passes are runtime's batch size (64)
PART_ROWS = 65_536             # rows per Parquet part file (about 100 MB of 384-d vectors)
FIELDS = ("text", "lang")
# Reading, parsing and writing take no CPU of Ray's budget: the actors hold one CPU per torch thread, and an
# I/O task waiting for a CPU the actors hold would starve them of input (a deadlock). One Ray CPU is left over
# all the same, for a task Ray schedules with its default of one CPU whatever we ask (as Ray 2.60's Parquet
# listing does, see read_corpus); a local Ray gets the cores plus that one, so it costs nothing there.
IO_CPUS = 0
IO_RESERVE = 1


class RayMissing(ImportError):
    """Ray Data is not installed: the message says how to install the extra."""


def import_ray():
    """``ray`` with ``ray.data`` loaded, or :class:`RayMissing` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayMissing(f"{e}. {EXTRA_HINT}") from e
    return ray


# ------------------------------------------------------------------ the encoder each actor loads
@dataclass(frozen=True)
class EncoderSpec:
    """What an actor loads (a KD-SPD folder, or a model name for Pyserini's Auto encoder recipe) and how
    it runs. ``batch_size`` (texts per forward pass) and ``precision`` left at None come from
    :func:`pyserini_kdspd.runtime.resolve`, as in every other encoding path."""

    name: str
    kind: str                      # "kdspd" or "auto"
    threads: int = 1
    batch_size: int | None = None
    precision: str | None = None
    max_length: int = 256          # pyserini.encode's default; a KD-SPD folder never exceeds its own length

    @classmethod
    def from_name(cls, name: str, **settings) -> "EncoderSpec":
        """A KD-SPD folder (or ``kdspd``: the default folder) by absolute path, else a packaged alias,
        Hugging Face id or folder; a packaged alias is converted here once, not by every actor at once."""
        from ..models import resolve_model
        from ..spd.documents import is_kdspd_folder, resolve_kdspd_model

        if is_kdspd_folder(name) or str(name).strip().lower() == "kdspd":
            return cls(str(resolve_kdspd_model(name).resolve()), "kdspd", **settings)
        resolved = resolve_model(name)
        try:  # here, not in every actor: a wrong name is one error, not a pool of actors dying at start
            from transformers import AutoConfig

            AutoConfig.from_pretrained(resolved)
        except OSError as e:
            raise FileNotFoundError(f"--encoder {name}: not a KD-SPD folder, a packaged alias or a model "
                                    f"transformers can load ({e})") from None
        if resolved == name and Path(name).exists():
            name = str(Path(name).resolve())
        return cls(str(name), "auto", **settings)

    def load(self):
        """``encode(texts, langs) -> (n, dim) float32``: the single-process encoder of this model."""
        from ..runtime import resolve

        if self.kind == "kdspd":
            from ..spd.documents import StudentDocumentEncoder

            enc = StudentDocumentEncoder(self.name, batch_size=self.batch_size, precision=self.precision,
                                         threads=self.threads)
            return lambda texts, langs: enc.encode(texts, langs=langs, max_length=self.max_length)
        from ..distill.teacher import Teacher

        teacher = Teacher(self.name, max_length=self.max_length, batch_size=self.batch_size,
                          precision=self.precision)
        resolve(threads=self.threads).apply_threads()
        return lambda texts, langs: teacher.encode_documents(texts, exact=False)


class EncodeBatches:
    """What each Ray actor runs: the encoder loaded once, then ``(docid, text, lang)`` rows in,
    ``(docid, vector, lang)`` rows out."""

    def __init__(self, spec: EncoderSpec, use_langs: bool = True):
        self.encode = spec.load()
        self.use_langs = use_langs

    def __call__(self, batch):
        from ..index.vectors import Vectors, arrow_table

        langs = batch.column("lang").to_pylist()
        vectors = self.encode(batch.column("text").to_pylist(), langs if self.use_langs else None)
        return arrow_table(Vectors(batch.column("docid").to_pylist(), vectors, langs, source="a Ray batch"))


# ------------------------------------------------------------------ reading
def corpus_records(batch):
    """Pyserini's JsonCollection fields of a batch of records: ``id`` / ``_id`` / ``docid`` as a string,
    ``text`` else ``contents`` stripped (as Pyserini strips each field), ``lang`` (empty: none)."""
    import pyarrow as pa

    names = batch.column_names
    id_col = next((c for c in ("id", "_id", "docid") if c in names), None)
    if id_col is None or not {"text", "contents"} & set(names):
        raise ValueError(f"corpus records need an id (id, _id or docid) and a text (text or contents); "
                         f"found columns {names}")
    docids = [None if d is None else str(d) for d in batch.column(id_col).to_pylist()]
    if None in docids:
        raise ValueError(f"a corpus record has no {id_col}")
    column = {c: batch.column(c).to_pylist() if c in names else [None] * len(docids) for c in ("text", "contents")}
    texts = [(t if t is not None else c or "").strip() for t, c in zip(column["text"], column["contents"])]
    raw = batch.column("lang").to_pylist() if "lang" in names else [None] * len(docids)
    langs = [str(x).strip() or None if x is not None else None for x in raw]
    return pa.table({"docid": pa.array(docids, pa.string()), "text": pa.array(texts, pa.string()),
                     "lang": pa.array(langs, pa.string())})


def read_corpus(ray, corpus: str):
    """A Ray dataset of ``(docid, text, lang)`` rows from a JsonCollection or Parquet file / folder."""
    from ..io import collection_files

    path = Path(corpus)
    remote = "://" in str(corpus)
    parquet = str(corpus).endswith(".parquet") or (path.is_dir() and any(path.glob("*.parquet")))
    if parquet:
        # Ray 2.60's default Parquet reader (DataSourceV2) lists files in a task that holds a whole CPU whatever
        # num_cpus says, and that task places a pool of footer-reading actors, each needing a free CPU to start:
        # with the encoding actors holding the others, none ever starts and the run waits forever. The V1 reader
        # reads the footers here, on the driver, before any actor exists, and its read tasks take IO_CPUS.
        context = ray.data.DataContext.get_current()
        v2, context.use_datasource_v2 = context.use_datasource_v2, False
        try:
            ds = ray.data.read_parquet(str(corpus), num_cpus=IO_CPUS)
        finally:
            context.use_datasource_v2 = v2
    else:
        files = [str(corpus)] if remote else [str(f) for f in collection_files(path)]
        ds = ray.data.read_json(files, lines=True, num_cpus=IO_CPUS)
    return ds.map_batches(corpus_records, batch_format="pyarrow", batch_size=None, num_cpus=IO_CPUS)


# ------------------------------------------------------------------ the pipeline
def start_ray(ray, address: str | None = None) -> bool:
    """Connect to ``address`` or start a local Ray with one CPU per core (and :data:`IO_RESERVE` for reading);
    False when a Ray was already running in this process (its owner shuts it down)."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=env)
    else:
        # Ray starts its workers at niceness 15, for a responsive head; here the actors are the job, and at 15
        # any other process on the machine (a training run, a second test worker) takes their CPU: an actor
        # got 3% of a core beside a training run. The local Ray's workers run at the caller's priority (the
        # raylet reads the setting from the environment it starts with; the caller's own is left as it was).
        user_set = "RAY_worker_niceness" in os.environ
        os.environ.setdefault("RAY_worker_niceness", "0")
        try:
            ray.init(num_cpus=os.cpu_count() + IO_RESERVE, include_dashboard=False, runtime_env=env)
        finally:
            if not user_set:
                del os.environ["RAY_worker_niceness"]
    return True


def _verify(folder: Path, expected: int) -> None:
    """Every input document exactly once in the written Parquet files, else an error naming what is wrong."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    docids = pq.read_table(str(folder), columns=["docid"]).column("docid")  # Arrow: 35M ids stay compact
    if pc.count_distinct(docids).as_py() != len(docids):
        counts = pc.value_counts(docids)
        twice = [(c["values"], c["counts"]) for c in counts.filter(pc.greater(counts.field("counts"), 1)).to_pylist()]
        raise RuntimeError(f"{folder}: {len(twice)} docids occur more than once (e.g. {twice[:3]}): the "
                           f"corpus repeats them, or a batch was written twice")
    if len(docids) != expected:
        raise RuntimeError(f"{folder}: {len(docids)} vectors written for {expected} corpus documents")


def _stamp(spec: EncoderSpec, corpus: str, fields) -> dict:
    from ..search.dense import model_fingerprint

    return {"encoder": asdict(spec) | {"threads": None}, "model": model_fingerprint(spec.name),
            "corpus": str(corpus), "fields": list(fields)}


def encode_corpus(corpus, encoder: str, output, actors: int = 2, batch_size: int = DEFAULT_BATCH_SIZE,
                  threads: int | None = None, precision: str | None = None, max_length: int = 256,
                  fields=FIELDS, address: str | None = None, max_restarts: int = 3, force: bool = False,
                  udf=EncodeBatches) -> dict:
    """Encode ``corpus`` with ``encoder`` on ``actors`` Ray actors into Parquet files in ``output``.

    Returns a summary (documents, seconds, documents per second, actors, threads). A finished output
    of the same model, settings, corpus and fields is reused unless ``force``. ``udf`` is the
    callable class the actors run (:class:`EncodeBatches`, or a subclass of it).
    """
    from ..io import read_json, write_json

    fields = tuple(fields)
    if not fields or fields[0] != "text" or not set(fields) <= set(FIELDS):
        raise ValueError(f"--fields must be `text` or `text lang`, got {' '.join(fields)}")
    output = Path(output).absolute()
    corpus = str(corpus) if "://" in str(corpus) else str(Path(corpus).absolute())
    if "://" not in corpus and not Path(corpus).exists():
        raise FileNotFoundError(f"{corpus}: no such corpus file or folder")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder for the Parquet part files")
    ray = import_ray()
    settings = dict(batch_size=None, precision=precision, max_length=max_length)
    spec = EncoderSpec.from_name(encoder, threads=threads or 1, **settings)
    if not force and (output / STAMP).is_file():
        done = read_json(output / STAMP)
        if {k: done.get(k) for k in ("encoder", "model", "corpus", "fields")} == _stamp(spec, corpus, fields):
            log.info("reusing %s (%d documents)", output, done["documents"])
            return done
    started = start_ray(ray, address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1)) - IO_RESERVE
        threads = threads or max(1, cpus // actors)
        if actors * threads > cpus:  # the pool (or the reading) would wait forever for CPUs that never come
            raise ValueError(f"{actors} actors x {threads} threads need {actors * threads} CPUs and the reading "
                             f"{IO_RESERVE} more; the Ray cluster has {cpus + IO_RESERVE}: lower --actors or --threads")
        spec = replace(spec, threads=threads)
        records = read_corpus(ray, corpus)
        expected = records.count()
        if expected == 0:
            raise ValueError(f"{corpus}: the corpus is empty: nothing to encode")
        tmp = output.with_name(output.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # Ray 2.60 has no named parameter for these yet (they go in 2.64)
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            vectors = records.map_batches(
                udf, fn_constructor_args=(spec, "lang" in fields), batch_size=batch_size, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads,
                max_restarts=max_restarts, max_task_retries=max_restarts)
            vectors.write_parquet(str(tmp), min_rows_per_file=PART_ROWS, ray_remote_args={"num_cpus": IO_CPUS})
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    _verify(tmp, expected)
    summary = _stamp(spec, corpus, fields) | {
        "documents": expected, "seconds": round(seconds, 2), "documents_per_second": round(expected / seconds, 2),
        "actors": actors, "threads_per_actor": threads, "batch_size": batch_size,
        "ray_address": address or "local"}
    write_json(tmp / STAMP, summary)
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)
    return summary


# ------------------------------------------------------------------ command line
def main(argv=None) -> int:
    from .._cli import NATURAL, POSITIVE_INT, configure_logging, run_cli
    from ..runtime import PRECISIONS

    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.scale.ray_encode", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True, help="JsonCollection (.jsonl file or folder) or Parquet file / folder")
    p.add_argument("--encoder", required=True,
                   help="a KD-SPD model folder (or kdspd: $PYSERINI_KDSPD_MODEL, else models/kdspd), a packaged "
                        "alias (multilingual-e5-small, all-MiniLM-L6-v2) or a Hugging Face model")
    p.add_argument("--output", required=True, type=Path, help="folder of Parquet part files (docid, vector, lang)")
    p.add_argument("--actors", type=POSITIVE_INT, default=2, help="Ray actors, each loading the encoder once")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULT_BATCH_SIZE,
                   help="documents per actor call, length-sorted inside into forward passes of "
                        "PYSERINI_KDSPD_BATCH_SIZE (default 64)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="torch threads (and Ray CPUs) per actor (default: the cluster's CPUs / actors)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: PYSERINI_KDSPD_PRECISION, else auto")
    p.add_argument("--max-length", type=POSITIVE_INT, default=256,
                   help="tokens per document, as pyserini.encode's --max-length (a KD-SPD folder caps it at its own)")
    p.add_argument("--fields", nargs="+", default=list(FIELDS), choices=FIELDS,
                   help="text lang (each document's language prompt; empty lang: language ID) or text (language "
                        "ID for all), as pyserini.encode's --fields")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (as ray.init takes it: auto, ray://HEAD:10001); default: start a "
                        "local Ray with one CPU per core of this machine (plus one for reading the corpus)")
    p.add_argument("--max-restarts", type=NATURAL, default=3,
                   help="restarts of a dead actor, and retries of its unfinished batch (default 3)")
    p.add_argument("--force", action="store_true", help="re-encode even when OUTPUT holds this model's vectors")
    args = p.parse_args(argv)
    configure_logging()
    try:
        import_ray()
    except RayMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def work():
        s = encode_corpus(args.corpus, args.encoder, args.output, actors=args.actors, batch_size=args.batch_size,
                          threads=args.threads, precision=args.precision, max_length=args.max_length,
                          fields=args.fields, address=args.address, max_restarts=args.max_restarts, force=args.force)
        print(f"{s['documents']} documents -> {args.output} in {s['seconds']:.1f} s "
              f"({s['documents_per_second']:.1f} documents/s, {s['actors']} actor(s) x {s['threads_per_actor']} "
              f"thread(s))")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
