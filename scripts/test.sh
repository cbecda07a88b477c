#!/usr/bin/env bash
# The test suite, slow end-to-end tests included (pass -m "not slow" to skip those).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$PYBIN" -m pytest -q -ra "$@"
