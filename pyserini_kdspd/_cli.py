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


def run_cli(work: Callable[[], int | None]) -> int:
    """Exit status of a command's ``work``: 2 with one ``error: ...`` line on standard error when an input
    the user can fix is missing or malformed (``FileNotFoundError``, ``ValueError``: an
    :class:`~pyserini_kdspd.io.FormatError` names the file and line), not a traceback."""
    try:
        return work() or 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
