#!/usr/bin/env bash
# Run the whole test suite: installs what it needs, starts real Tansu and Redis processes itself.
# Extra arguments go to pytest (e.g. -k pipeline, -x).
source "$(dirname "$0")/_venv.sh" test
# Debian's prometheus package gives promtool (the rule tests) and the prometheus server (the dashboard
# and alert end-to-end test); Debian's chromium is the browser of the live board's test (driven by
# Playwright, never a downloaded browser). Those tests never skip: what is missing is installed here.
missing=()
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then missing+=(prometheus); fi
if [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages) ..." >&2
    apt_log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
        || ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
      cat "$apt_log" >&2
      rm -f "$apt_log"
      echo "could not install ${missing[*]} with apt-get (output above)" >&2
      exit 2
    fi
    rm -f "$apt_log"
  else
    echo "missing: ${missing[*]}. promtool and prometheus must be on PATH (tests/integration/test_alert_rules.py," >&2
    echo "test_prometheus_e2e.py) and chromium at /usr/bin/chromium (tests/integration/test_board_browser.py)." >&2
    echo "Install them and re-run: 'sudo apt-get install prometheus chromium' on Debian/Ubuntu, or put the promtool" >&2
    echo "and prometheus binaries from https://prometheus.io/download/ on PATH (or run scripts/test.sh as root on Debian)." >&2
    exit 2
  fi
fi
.venv/bin/ruff check salespulse tests bench
.venv/bin/salespulse schemas --check
exec .venv/bin/python -m pytest -q "$@"
