# Sourced by run.sh and test.sh: a project virtualenv with salespulse installed (idempotent, quick when current).
# $1: the extras to install, e.g. "embedded" or "test,embedded".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11) or sys.version_info >= (3, 14))'; then
  echo "salespulse needs Python 3.11, 3.12 or 3.13 (found: $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${1//,/-}
if [ ! -f "$stamp" ]; then
  echo "installing salespulse into .venv ($1) ..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e ".[$1]"
  touch "$stamp"
fi
