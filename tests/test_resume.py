"""Resuming after a crash: a run SIGKILLed after its first epoch and re-run with ``resume=true`` ends exactly where
the uninterrupted run ends (scores, best checkpoint, weights); missing checkpoints are clear errors or fresh starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, synthetic_sentences, write_conll
from test_pipeline import FAST, config

from tokexit.lightning.checkpointing import AtomicCheckpointIO
from tokexit.train import train

# lower learning rates than FAST and larger validation/test files: the scores still climb in every epoch (the
# best checkpoint is the last one) and are fine-grained enough that a continuation drawing other dropout masks
# ends with other test scores (checked: without the RNG restore, layers 1-2 differ)
SETTINGS = {"model.backbone_lr": "5e-4", "model.head_lr": "2e-3", "trainer.max_epochs": "3", "save_model": "false"}
OVERRIDES = [o for o in FAST if o.split("=")[0] not in SETTINGS] + [f"{k}={v}" for k, v in SETTINGS.items()]


def data_files(root: Path) -> list[str]:
    files = {"train": write_conll(root / "train.txt", synthetic_sentences(200, seed=1)),
             "validation": write_conll(root / "dev.txt", synthetic_sentences(100, seed=2)),
             "test": write_conll(root / "test.txt", synthetic_sentences(150, seed=3))}
    return [f"data.{split}_file={path}" for split, path in files.items()]


def start(out: Path, data: list[str], *extra: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*.log')))}.log"
    with open(log, "w") as f:  # a file, not a pipe: nothing blocks on a full pipe, and the child keeps it open
        process = subprocess.Popen([sys.executable, "-m", "tokexit.train", *OVERRIDES, *data, f"output_dir={out}",
                                    *extra], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    return process, log


def finish(process: subprocess.Popen, log: Path) -> str:
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    data = data_files(tmp_path)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    # the uninterrupted run, started with resume=true on a fresh output_dir: a logged fresh start
    ref_process, ref_log = start(reference, data, "resume=true")
    process, log = start(interrupted, data)
    last = interrupted / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists():
        assert process.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no last.ckpt after 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # last.ckpt is renamed into place whole: it is never seen half-written
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert not (interrupted / "metrics.json").exists(), "killed too late: the run had already finished"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)
    assert killed_at["epoch"] < 2, "the resumed run must have epochs left to train"

    text = finish(*start(interrupted, data, "resume=true"))
    assert f"resume=true: continuing from {last}" in text
    assert "Restored all states from the checkpoint" in text
    ref_text = finish(ref_process, ref_log)
    assert "does not exist: starting from scratch" in ref_text

    expected = json.loads((reference / "metrics.json").read_text())
    resumed = json.loads((interrupted / "metrics.json").read_text())
    assert resumed["layers"] == expected["layers"]  # exact floats: the same computation
    assert resumed["full_depth"] == expected["full_depth"]
    assert resumed["validation_layers"] == expected["validation_layers"]
    assert len(resumed["train_epoch_seconds"]) == 3  # the timer goes on counting after the restart
    assert Path(resumed["best_checkpoint"]).name == "best.ckpt"
    # best.ckpt is the best over all epochs (the tracking survived the restart), and the weights are identical
    best, best_ref = (torch.load(d / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
                      for d in (interrupted, reference))
    assert best["epoch"] == best_ref["epoch"] and best["global_step"] == best_ref["global_step"]
    for name, tensor in weights(reference / "checkpoints" / "last.ckpt").items():
        assert torch.equal(tensor, weights(last)[name]), name
    assert sorted(p.name for p in (interrupted / "checkpoints").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_missing_ckpt_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=/missing/last\.ckpt: no such checkpoint file"):
        train(config("train", [*OVERRIDES, f"output_dir={tmp_path / 'run'}", "ckpt_path=/missing/last.ckpt"]))
    assert not (tmp_path / "run").exists()  # it fails before reading any data


class Interrupted(Exception):
    pass


def test_atomic_checkpoint_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0, "w": torch.ones(3)}, path)
    assert torch.load(path)["epoch"] == 0 and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    seen = []

    def interrupted_save(obj, f):
        f.write(b"half a checkpoint")
        f.flush()
        seen.append(torch.load(path)["epoch"])  # meanwhile, a reader still finds the old checkpoint
        raise Interrupted

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(Interrupted):
        io.save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert seen == [0] and torch.load(path)["epoch"] == 0  # the old checkpoint, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the partial file is removed
    (path.parent / ".last.ckpt.partial").write_bytes(b"left by a SIGKILL")
    io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)  # the next write replaces it
    assert torch.load(path)["epoch"] == 2 and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
