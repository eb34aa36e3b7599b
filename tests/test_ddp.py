"""DDP: training runs under Lightning DDP (2 CPU processes, gloo) by trainer config alone, and its test scores,
gathered over both ranks, equal a single-process evaluation of the same model: no word counted twice even
though the distributed sampler pads the odd-sized test set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from test_pipeline import run_evaluate


@pytest.mark.slow
def test_ddp_two_cpu_processes_score_like_one(ner_files, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "tokexit.train", "model=tiny", "trainer=ddp_cpu", "trainer.max_epochs=2",
           "model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=8", "trainer.enable_progress_bar=false",
           *[f"data.{split}_file={path}" for split, path in ner_files.items()], f"output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    ddp = json.loads((out / "metrics.json").read_text())
    assert ddp["counts"]["test_sentences"] == 37
    single = run_evaluate(out / "model", ner_files["test"], tmp_path / "eval")
    assert ddp["layers"] == single["layers"]
    assert ddp["full_depth"]["f1"] > 0
