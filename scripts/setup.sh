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
    log=.venv/setup.log
    echo "setting up .venv (log: $log)"
    if ! { .venv/bin/python -m pip install --upgrade pip \
            && .venv/bin/python -m pip install "torch==2.13.0" \
            && .venv/bin/python -m pip install -e ".[embedded,plot,dev,onnx]"; } > "$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "scripts/setup.sh: installation failed, see $log" >&2
        exit 1
    fi
    touch "$stamp"
fi
