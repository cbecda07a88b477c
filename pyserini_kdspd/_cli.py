"""What every ``python -m pyserini_kdspd.*`` command shares: its log format and how it reports bad input."""
from __future__ import annotations

import logging
import sys
from typing import Callable


def configure_logging(fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """INFO logs for our commands, without FAISS's loader reporting at INFO, on every start, each build
    it does not ship (``ModuleNotFoundError ... swigfaiss_avx512``) before it loads the one it has."""
    logging.basicConfig(level=logging.INFO, format=fmt)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def run_cli(work: Callable[[], int | None]) -> int:
    """Exit status of a command's ``work``: 2 with one ``error: ...`` line on standard error when an input
    the user can fix is missing or malformed (``FileNotFoundError``, ``ValueError``: an
    :class:`~pyserini_kdspd.io.FormatError` names the file and line), not a traceback."""
    try:
        return work() or 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
