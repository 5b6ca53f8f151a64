#!/usr/bin/env bash
# The README's test command: install what the tests need, then run them all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec .venv/bin/python -m pytest -ra "$@"
