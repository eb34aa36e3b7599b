#!/usr/bin/env bash
# The foundation's real training runs (MiniLM-L6, full data from ../shared/data), one after the other, then the
# per-layer reports. Takes about 2 hours on 2 CPU cores. Run from the repo root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
for exp in conll2003_minilm ewt_minilm wnut17_minilm; do
    if [ ! -f "runs/${exp%_minilm}-minilm-l6/metrics.json" ]; then
        .venv/bin/python -m tokexit.train experiment=$exp > "runs/${exp%_minilm}-minilm-l6.log" 2>&1
    fi
done
.venv/bin/python scripts/foundation_report.py runs/conll2003-minilm-l6 runs/ewt-minilm-l6 --out reports/foundation.md
