#!/usr/bin/env bash
# Run salespulse on this machine: embedded broker and Redis, webhooks and a worker on :8080.
# Extra arguments go to `salespulse run` (default: --simulate, for numbers within a minute).
source "$(dirname "$0")/_venv.sh" embedded
if [ "$#" -eq 0 ]; then set -- --simulate; fi
exec .venv/bin/salespulse run "$@"
