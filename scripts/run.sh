#!/usr/bin/env bash
# Run salespulse on this machine: embedded broker and Redis, webhooks and a worker on :8080.
# Extra arguments go to `salespulse run` (default: --simulate --ephemeral, numbers within a minute and
# nothing simulated kept; with any argument the run is durable in SALESPULSE_DATA_DIR unless --ephemeral).
source "$(dirname "$0")/_venv.sh" embedded
if [ "$#" -eq 0 ]; then set -- --simulate --ephemeral; fi
exec .venv/bin/salespulse run "$@"
