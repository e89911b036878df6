#!/usr/bin/env bash
# Run the whole test suite: installs what it needs, starts real Tansu and Redis processes itself.
# Extra arguments go to pytest (e.g. -k pipeline, -x).
source "$(dirname "$0")/_venv.sh" test
.venv/bin/salespulse schemas --check
exec .venv/bin/python -m pytest -q "$@"
