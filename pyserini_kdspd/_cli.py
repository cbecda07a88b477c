"""What every ``python -m pyserini_kdspd.*`` command shares: its log format and how it reports bad input."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Callable


def configure_logging(fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """INFO logs for our commands, without FAISS's loader reporting at INFO, on every start, each build
    it does not ship (``ModuleNotFoundError ... swigfaiss_avx512``) before it loads the one it has."""
    logging.basicConfig(level=logging.INFO, format=fmt)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def output_file(value: str) -> Path:
    """argparse ``type`` of an output file flag: a folder is refused at parsing, before any work is done."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give the path of a file to write")
    return path


def number_type(kind, minimum=0, allow_minimum=False):
    """An argparse type for a finite ``kind`` above ``minimum`` (or at it): a zero budget or batch
    used to fail with a traceback only after the models had loaded."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < minimum or value == minimum and not allow_minimum:
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_minimum else '>'} {minimum}, got {text}")
        return value
    return parse


POSITIVE_INT, POSITIVE, NATURAL = number_type(int), number_type(float), number_type(int, allow_minimum=True)
NONNEGATIVE = number_type(float, allow_minimum=True)


def add_driver_flags(p: argparse.ArgumentParser, block: str, source: str) -> None:
    """``--readme`` (rewrite the README block between ``<!-- block:start -->`` and ``<!-- block:end -->`` from
    ``source``, running nothing) and, after ``--``, flags passed on to every ``python -m pyserini_kdspd.train``."""
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help=f"run nothing: rewrite the block between <!-- {block}:start --> and <!-- {block}:end --> "
                        f"of README (default README.md) from {source}")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="after --: more flags for every `python -m pyserini_kdspd.train` (e.g. -- --bitext DIR)")


def resolve_data_dir(p: argparse.ArgumentParser, given: Path | None) -> Path | None:
    """``--data-dir`` (else ``$PYSERINI_KDSPD_DATA``, else ``../shared/data``) resolved once, before any work: a
    folder named but absent is a usage error of ``p`` (exit 2), never a silent fall-back to another folder."""
    from .paths import data_dir

    try:
        return data_dir(given)
    except FileNotFoundError as e:
        p.error(str(e))


def train_passthrough(args: argparse.Namespace) -> list[str]:
    return [a for a in args.train_args if a != "--"]


def run_cli(work: Callable[[], int | None]) -> int:
    """Exit status of a command's ``work``: 2 with one ``error: ...`` line on standard error when an input
    the user can fix is missing or malformed (``FileNotFoundError``, ``ValueError``: an
    :class:`~pyserini_kdspd.io.FormatError` names the file and line), not a traceback."""
    try:
        return work() or 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def rewrite_readme_block(readme: Path, key: str, block: Callable[[], str], what: str) -> int:
    """``--readme`` of a command that writes a README block: replace the lines between ``<!-- key:start -->``
    and ``<!-- key:end -->`` with ``block()`` (built only once the README is known to exist); exit status as
    :func:`run_cli`."""
    def work() -> None:
        from .io import replace_marked_block

        if not Path(readme).is_file():
            raise FileNotFoundError(f"--readme {readme}: no such file")
        replace_marked_block(readme, key, block())
        print(f"{readme}: rewrote the {what}")
    return run_cli(work)


def report_block(root: Path, report: str, prog: str) -> str:
    """The README block of a command whose report (``report``, relative to its ``root``) opens with the command
    that wrote it: the report behind a "written by" line."""
    path = Path(root) / report
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run {prog} first (--output-root names its root)")
    return (f"<!-- written by `{prog} --readme` from {report}; edits here are overwritten -->\n"
            + path.read_text(encoding="utf-8").strip())


def run_jobs(jobs: list[tuple[str, list[str], Path]], width: int = 2, tag: str = "train",
             every: float = 60) -> None:
    """Run ``(label, command, log file)`` jobs ``width`` at a time, each appending to its log; print each
    job's last progress line every ``every`` seconds when it changed (a quiet training prints nothing between
    dev checks). Raises RuntimeError naming the log of the first failure.

    Two 1-thread trainings side by side get more steps per hour out of a 2-core CPU than two
    sequential 2-thread ones (README: training notes), so drivers run them this way.
    """
    import subprocess
    import time

    pending, running, failed = list(jobs), [], []
    last, shown = time.monotonic(), {}
    while pending or running:
        while pending and len(running) < max(1, width):
            label, cmd, log_file = pending.pop(0)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            print(f"[{tag}] {label}: {' '.join(map(str, cmd))}\n        log: {log_file}", flush=True)
            f = open(log_file, "a", encoding="utf-8")  # a reused or resumed run keeps the earlier log
            f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(map(str, cmd))}\n")
            f.flush()
            running.append((label, subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT),
                            f, log_file))
        time.sleep(min(1, every))  # a reused run returns in seconds
        for job in [j for j in running if j[1].poll() is not None]:
            running.remove(job)
            job[2].close()
            if job[1].returncode != 0:
                failed.append(f"{job[0]} (exit {job[1].returncode}; see {job[3]})")
        if time.monotonic() - last >= every:
            last = time.monotonic()
            for label, _, _, log_file in running:
                line = last_line(log_file)
                if line and shown.get(label) != line:
                    shown[label] = line
                    print(f"[{tag}] {label}: {line}", flush=True)
    if failed:
        raise RuntimeError("failed: " + "; ".join(failed))


def last_line(log_file: Path) -> str:
    """The last progress line of a job's log (tqdm's carriage returns count as line ends)."""
    try:
        tail = log_file.read_bytes()[-2000:].decode("utf-8", "replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1][:150] if parts else ""
