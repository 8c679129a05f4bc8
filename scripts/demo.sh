#!/usr/bin/env bash
# The main job, after `make up`: migrations, topics, the consumer daemon, a demo stream, a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/finpass-pipeline demo "$@"
