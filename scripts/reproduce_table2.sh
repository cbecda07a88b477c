#!/usr/bin/env bash
# Reproduce the paper's Table 2 on the offline default (LAReQA XQuAD-R; mTREC and CLEF when their files are given).
# Creates or reuses .venv, installs, prepares data, trains the students, runs every system, prints the table.
# Re-running reuses what exists. Flags go to `python -m pyserini_kdspd.table2` (e.g. --mode full,
# --train-steps N, --force, --latex; --readme rewrites README.md's table from the runs without running anything).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYBIN" -m pyserini_kdspd.table2 "$@"
