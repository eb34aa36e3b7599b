"""What a resumed run needs beyond Lightning's own checkpoint: the random generators' states and an atomic write.

Lightning restores weights, optimizer, LR scheduler, loop progress and callback states (the best-checkpoint
tracking of ``ModelCheckpoint`` included), but not the random generators: dropout, the self-sampling module's
exit settings and every DataLoader's base seed draw from them, so without :class:`RngStateCheckpoint` a resumed
run diverges from the uninterrupted one at its first batch.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)
RNG_KEY = "tokexit_rng_states"


def rng_states() -> dict[str, Any]:
    """This process's generators, as tensors and plain Python values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        # this process's device only (DDP: one GPU per rank); untouched CUDA has nothing to restore
        "torch.cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if states.get("torch.cuda") is not None:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(states["torch.cuda"].cpu())  # the current device, set up before the restore
        else:
            log.warning("the checkpoint holds a CUDA generator state but CUDA is unavailable: not restored")
    n = states["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def all_rank_states(trainer) -> list[dict[str, Any]]:
    """Every rank's generator states, indexed by global rank (one entry without DDP). A collective call:
    Lightning builds a checkpoint on every rank (only rank 0 writes it)."""
    mine = rng_states()
    if trainer.world_size == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return [mine]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


class RngStateCheckpoint(Callback):
    """Stores the torch (CPU and CUDA), numpy and Python ``random`` generator states of every rank in each
    checkpoint and, when ``fit`` resumes from one, restores this rank's states as soon as it is loaded. Loading a
    checkpoint to test or validate leaves the generators alone.

    When: ``ModelCheckpoint`` saves at the end of validation, and the uninterrupted run draws nothing more until it
    creates the next epoch's training iterator (the DataLoader's base seed: one draw). The resumed run creates its
    first training iterator in ``FitLoop.setup_data``, before ``on_train_start`` and ``on_train_epoch_start``, and
    draws nothing between loading the checkpoint and that point (the sanity check runs under ``isolate_rng``;
    DynaBERT does not rewire again), so restoring on load puts that draw, and everything after it, in step.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = all_rank_states(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        states = checkpoint.get(RNG_KEY)
        if not states:
            log.warning("the checkpoint holds no random generator states: the resumed run will not repeat the "
                        "uninterrupted one exactly")
            return
        rank = trainer.global_rank
        if len(states) != trainer.world_size:
            log.warning("the checkpoint holds the random generator states of %d processes, this run has %d: every "
                        "process takes those of process %d", len(states), trainer.world_size, rank % len(states))
        set_rng_states(states[rank % len(states)])


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a hidden temporary file next to the checkpoint, flushed to disk, then renamed onto it.

    Lightning's own write goes through a temporary file of the system temp directory and ``shutil.move``, which
    copies straight onto the checkpoint when that directory is on another file system (a tmpfs ``/tmp``): a kill
    during the copy would leave a truncated ``last.ckpt``. A rename inside one directory is atomic: a reader sees
    the old checkpoint or the new one. Remote (fsspec) paths keep Lightning's write.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")  # a kill leaves it behind; the next save overwrites it
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut too
        finally:
            os.close(directory)
