"""``python -m pyserini_kdspd.data <collection> [--data-dir D] [--output-root .] [--force]``.

One sub-command per collection registered in :data:`pyserini_kdspd.data.PREPARERS`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import load_all


def _describe(result) -> list[str]:
    """Readable lines for whatever a prepare function returned (a dataclass of paths, ideally)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        lines = []
        for f in dataclasses.fields(result):
            value = getattr(result, f.name)
            if isinstance(value, dict):
                lines += [f"{f.name}.{k}: {v}" for k, v in value.items()]
            else:
                lines.append(f"{f.name}: {value}")
        return lines
    return [] if result is None else [str(result)]


def main(argv=None) -> int:
    preparers = load_all()
    parser = argparse.ArgumentParser(prog="python -m pyserini_kdspd.data",
                                     description="Write a collection (JSON lines), its topics (TSV) and qrels "
                                                 "(TREC) in the formats stock Pyserini reads.")
    sub = parser.add_subparsers(dest="collection", required=True, metavar="COLLECTION")
    for name, prep in sorted(preparers.items()):
        p = sub.add_parser(name, help=prep.help, description=prep.help)
        p.add_argument("--data-dir", default=None,
                       help="shared data folder (default: $PYSERINI_KDSPD_DATA, else ../shared/data)")
        p.add_argument("--output-root", default=".", type=Path,
                       help="where collections/, topics/ and qrels/ are written (default: .)")
        p.add_argument("--force", action="store_true", help="rebuild even when the outputs are complete")
        if prep.add_arguments:
            prep.add_arguments(p)
    args = parser.parse_args(argv)
    from .._cli import configure_logging, run_cli

    configure_logging("%(levelname)s %(name)s: %(message)s")
    options = {k: v for k, v in vars(args).items() if k != "collection"}

    def work():
        for line in _describe(preparers[args.collection].prepare(**options)):
            print(line)

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
