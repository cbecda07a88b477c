#!/usr/bin/env bash
# The test suite, slow end-to-end tests included (pass -m "not slow" to skip those).
# Two pytest-xdist workers take whole test files (module fixtures are built once); KDSPD_TEST_WORKERS=0 runs
# everything in this process, in file order.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
workers="${KDSPD_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec "$PYBIN" -m pytest -q -ra "$@"
fi
exec "$PYBIN" -m pytest -q -ra -n "$workers" --dist loadfile "$@"
