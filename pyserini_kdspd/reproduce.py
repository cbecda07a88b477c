"""``python -m pyserini_kdspd.reproduce``: the Table 2 regression matrix, as Pyserini's 2CR runs its own.

Run it where the driver ran (``--root``) once ``python -m pyserini_kdspd.table2`` has finished::

    python -m pyserini_kdspd.reproduce --list-conditions
    python -m pyserini_kdspd.reproduce --write-expected            # scores of the driver's own runs -> YAML
    python -m pyserini_kdspd.reproduce --all                       # remake every run, print [OK] / [FAIL]
    python -m pyserini_kdspd.reproduce --condition kdspd --condition mdpr --display-commands
    python -m pyserini_kdspd.reproduce --all --dry-run             # print the commands, run nothing

Each condition's commands remake its run under ``runs/<collection>/2cr/`` from the driver's indexes, models
and topics; the run is evaluated as the driver's table is and held to the expected scores with the
condition's tolerance (both in the YAML, see its header), and compared byte for byte with the driver's row.
Exit status 1 when any check fails, 2 on bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._cli import configure_logging, run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", default="lareqa", help="the packaged matrix resources/2cr/COLLECTION.yaml")
    p.add_argument("--yaml", type=Path, default=None, help="another matrix file (default: the packaged one)")
    p.add_argument("--root", type=Path, default=Path("."),
                   help="where the driver ran (its --output-root; default .): commands run there")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list-conditions", action="store_true", help="print the condition names")
    what.add_argument("--all", action="store_true", help="run every condition")
    what.add_argument("--condition", action="append", metavar="NAME", help="run this condition (repeatable)")
    what.add_argument("--write-expected", action="store_true",
                      help="evaluate the driver's runs (runs/<collection>/table2.json) and write their scores, "
                           "the driver's command and seed and its machine into the YAML; runs nothing else")
    p.add_argument("--display-commands", action="store_true", help="print each command as it runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands (and missing artifacts); run nothing")
    p.add_argument("--skip-run", action="store_true", help="only evaluate the runs already under runs/<collection>/2cr")
    a = p.parse_args(argv)
    configure_logging()

    def work() -> int:
        from . import matrix

        m = matrix.load(a.yaml or matrix.default_yaml(a.collection))
        if a.list_conditions:
            print("\n".join(c.name for c in m.conditions))
            return 0
        if a.write_expected:
            scores = matrix.write_expected(m, a.root)
            for name, s in scores.items():
                print(f"{name:20} " + (" ".join(f"{k} {v:.4f}" for k, v in s.items()) if s
                                        else "- (the driver made no such row)"))
            print(f"{m.path}: wrote the expected scores of {sum(s is not None for s in scores.values())} of "
                  f"{len(scores)} conditions from {a.root / 'runs' / m.collection / 'table2.json'}")
            return 0
        return matrix.run_matrix(m, a.condition, a.root, dry_run=a.dry_run, skip_run=a.skip_run,
                                 display=a.display_commands or a.dry_run)
    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
