#!/usr/bin/env bash
# Create .venv (once) and install tokexit with its embedded default backbone and data set.
# torch is pinned through a pip constraint so that no dependency can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
export PIP_CONSTRAINT="$PWD/constraints.txt"
stamp=.venv/.tokexit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[embedded,plot,dev]"
    touch "$stamp"
fi
