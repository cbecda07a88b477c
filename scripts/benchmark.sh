#!/usr/bin/env bash
# Speed and memory of the trained KD-SPD student on this machine (prints a Markdown table).
# Needs models/kdspd (bash scripts/reproduce_table2.sh makes it). Options: python benchmarks/kdspd.py --help
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYBIN" "$ROOT/benchmarks/kdspd.py" "$@"
