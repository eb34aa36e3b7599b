"""``tokexit.tag`` over several processes: ``torchrun --nproc-per-node 2`` (gloo on CPU) writes the same bytes as one
process (each rank tags every other chunk, rank 0 merges the parts in input order); a killed shard resumes from the
chunk files it left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO, synthetic_sentences, write_conll
from test_tag import EXIT, tiny_tagger

from tokexit.api import Tagger
from tokexit.exits import TokenWindowExit
from tokexit.inference.setting import Setting
from tokexit.io.progress import ResumeError
from tokexit.io.streaming import Shard, tag_file


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_tagger(tmp_path_factory.mktemp("tag_distributed"))


@pytest.mark.slow
def test_two_gloo_processes_write_the_bytes_of_one(model, tmp_path):
    data = write_conll(tmp_path / "in.conll", synthetic_sentences(120, seed=11))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["-m", "tokexit.tag", f"model_dir={model}", f"input={data}", *EXIT, "exit_layer=true",
            "chunk_sentences=7", "batch_size=8", "device=cpu"]
    one = subprocess.run([sys.executable, *args, f"output={tmp_path / 'one.conll'}"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *args, f"output={tmp_path / 'two.conll'}"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[rank 0/2]" in two.stderr and "[rank 1/2]" in two.stderr
    assert (tmp_path / "two.conll").read_bytes() == (tmp_path / "one.conll").read_bytes()
    assert len((tmp_path / "one.conll").read_text().split("\n\n")) == 121
    assert not (tmp_path / "two.conll.parts").exists()


def run_ranks(tag_of_rank, data: Path, output: Path, resume: bool = False, world: int = 2, **kwargs) -> list:
    """``tag_file`` as ``world`` ranks in threads with a shared barrier (a failing rank breaks it for all)."""
    barrier = threading.Barrier(world, timeout=60)
    results: list = [None] * world

    def rank(r: int) -> None:
        try:
            results[r] = tag_file(tag_of_rank(r), data, output, chunk_sentences=5, exit_layer=True, resume=resume,
                                  settings={"model": "tiny"}, shard=Shard(r, world, barrier.wait),
                                  progress_seconds=0, **kwargs)
        except BaseException as error:  # handed to the test
            results[r] = error
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_killed_shard_resumes_from_its_chunk_files(model, tmp_path):
    data = write_conll(tmp_path / "in.conll", synthetic_sentences(48, seed=12))  # 10 chunks of 5
    tagger = Tagger.load(model, device="cpu")
    setting = Setting(TokenWindowExit(0.7))
    tagged: dict[int, list[int]] = {0: [], 1: []}

    def tag_of_rank(rank: int, crash_after: int | None = None):
        def tag(words):
            if crash_after is not None and len(tagged[rank]) == crash_after:
                raise RuntimeError(f"rank {rank} killed")
            tagged[rank].append(len(words))
            return tagger.predict(words, setting, 8)
        return tag

    tag_file(tag_of_rank(0), data, tmp_path / "reference.conll", chunk_sentences=5, exit_layer=True,
             settings={"model": "tiny"}, progress_seconds=0)
    out = tmp_path / "out.conll"
    tagged[0].clear()
    results = run_ranks(lambda r: tag_of_rank(r, crash_after=2 if r == 1 else None), data, out)
    assert isinstance(results[1], RuntimeError) and not out.exists()
    assert sorted(p.name for p in (tmp_path / "out.conll.parts").glob("*.part")) == [
        f"{i:09d}.part" for i in (0, 1, 2, 3, 4, 6, 8)]  # rank 0: every even chunk; rank 1: chunks 1 and 3
    refused = run_ranks(tag_of_rank, data, out, resume=True, world=3)  # a rank that raises breaks the barrier
    assert all(isinstance(r, Exception) for r in refused) and any(  # for the others: they may see that first
        isinstance(r, ResumeError) and "world_size: 2 -> 3" in str(r) for r in refused)
    tagged[0].clear()
    tagged[1].clear()
    results = run_ranks(tag_of_rank, data, out, resume=True)
    assert [r["chunks_resumed"] for r in results] == [5, 2] and tagged == {0: [], 1: [5, 5, 3]}
    assert out.read_bytes() == (tmp_path / "reference.conll").read_bytes()
    assert not (tmp_path / "out.conll.parts").exists()
