"""``python -m pyserini_kdspd.models {path,settings,list}``: model folders and settings for stock Pyserini."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .registry import MODELS, model_settings, resolve_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyserini_kdspd.models",
                                 description="Model names -> folders that transformers, sentence-transformers "
                                             "and Pyserini load offline.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("path", help="print the local folder of NAME (building the e5 conversion if needed)")
    p.add_argument("name")
    p.add_argument("--verify", action="store_true", help="re-hash every cached file")
    s = sub.add_parser("settings", help="print pooling / l2_norm / prefixes of NAME as JSON")
    s.add_argument("name")
    sub.add_parser("list", help="print the offline aliases")
    args = ap.parse_args(argv)
    if args.cmd == "path":
        print(resolve_model(args.name, verify=args.verify))
    elif args.cmd == "settings":
        print(json.dumps(model_settings(args.name), indent=2))
    else:
        for info in MODELS.values():
            print(json.dumps(asdict(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
