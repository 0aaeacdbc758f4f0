#!/usr/bin/env bash
# The checks marked `slow`, which the default suite (`make test`) leaves out to stay near 20
# minutes on 2 cores: `bash bench/slow_checks.sh [PYTEST ARGS]`. Prints each check's time;
# figures in BENCHMARKS.md ("Test-suite time and the slow checks").
set -euo pipefail
cd "$(dirname "$0")/.."
make install >/dev/null
exec .venv/bin/pytest -m slow --durations=0 "$@"
