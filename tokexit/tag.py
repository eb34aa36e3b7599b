"""Tag a corpus with a trained tagger, in one streaming pass:

``python -m tokexit.tag model_dir=DIR input=PATH output=PATH [exit=token_window exit.threshold=T | speed=2]
[fate=drop] [quantize=bf16|int8] [batch_size=32] [chunk_sentences=1000] [resume=true]
[format=auto|conll|conllu|text|jsonl] [exit_layer=true]`` (console script ``tokexit-tag``), or over several
processes with ``torchrun --nproc-per-node N -m tokexit.tag ...`` (gloo on CPU, NCCL on GPUs: each process tags
every N-th chunk, rank 0 merges the parts).

No baseline run, no scoring, no timing: the path of ``Tagger.tag`` (:meth:`tokexit.api.Tagger.predict`) over the
file's chunks (:mod:`tokexit.io.streaming`; formats in :mod:`tokexit.io.formats`, resume in :mod:`tokexit.io.progress`).
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tokexit import CONFIG_DIR
from tokexit.api import Tagger
from tokexit.config import UsageError, build, hydra_choice, unset
from tokexit.engine.quantize import SCHEMES
from tokexit.fates import FATES
from tokexit.inference.setting import Setting
from tokexit.io.progress import file_identity
from tokexit.io.streaming import Shard, check_request, tag_file
from tokexit.model_io import EXIT_POLICIES, EXITS_FILE, SELECTOR_FILE, resolve_device

USAGE = ("python -m tokexit.tag model_dir=DIR input=PATH output=PATH [exit=POLICY exit.threshold=T | speed=X] "
         "[fate=copy|drop|reduce] [quantize=bf16|int8] [batch_size=N] [chunk_sentences=N] [resume=true] "
         "[format=auto|conll|conllu|text|jsonl] [exit_layer=true]")
#: a barrier waits this long for the slowest rank (ranks share the work evenly; a failed rank ends them all)
BARRIER_TIMEOUT = datetime.timedelta(hours=24)


def require_settings(cfg: DictConfig) -> None:
    """The settings ``tokexit.tag`` cannot guess or that contradict each other, checked before anything loads."""
    missing = [k for k in ("model_dir", "input", "output") if unset(cfg, k)]
    if missing:
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: {USAGE}")
    try:
        check_request(str(cfg.input), str(cfg.output), cfg.format, cfg.chunk_sentences)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if cfg.get("quantize") is not None and cfg.quantize not in SCHEMES:
        raise UsageError(f"quantize={cfg.quantize} is not a scheme: give {' or '.join(SCHEMES)} (or none: fp32)")
    if str(cfg.output).lower().endswith(".gz"):
        raise UsageError(f"output={cfg.output}: tokexit.tag writes plain text (a resumable file is appended to and "
                         "cut back in place); write OUTPUT without .gz and compress it afterwards")
    given = [g for g in ("exit", "fate") if cfg.get(g) is not None]
    if cfg.get("speed") is not None and given:
        raise UsageError(f"speed={cfg.speed} is a stored exit policy and token fate: give speed or "
                         f"{' and '.join(given)}, not both")
    for group in given:
        if cfg[group].get("target_speedup") is not None:
            raise UsageError(f"{group}.target_speedup is calibrated by tokexit.evaluate: run python -m "
                             f"tokexit.evaluate model_dir={cfg.model_dir} data.test_file=TEST data.validation_file=DEV "
                             f"{group}={group_choice(cfg, group)} {group}.target_speedup={cfg[group].target_speedup} "
                             f"save_profile=true, then tag with speed={cfg[group].target_speedup}")


def group_choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for config group ``group`` (``exit=token_window``): as Hydra recorded it, else the name
    of the class its ``_target_`` builds."""
    if choice := hydra_choice(group):
        return choice
    target = str(cfg[group].get("_target_", "")).rsplit(".", 1)[-1]
    registry = EXIT_POLICIES if group == "exit" else FATES
    return next((name for name, cls in registry.items() if cls.__name__ == target), target)


def build_setting(cfg: DictConfig, tagger: Tagger) -> Setting:
    """``speed`` (a stored profile) or ``exit``/``fate`` (config groups; absent: the full model), checked."""
    nodes = {}
    for group in ("exit", "fate"):
        node = OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) is not None else None
        if node is not None:
            node.pop("target_speedup", None)
        nodes[group] = build(node) if node is not None else None
    try:
        setting = tagger.setting(nodes["exit"], nodes["fate"], cfg.get("speed"), cfg.batch_size)
        setting.check(tagger.encoder, "token_tagger")
    except ValueError as error:  # an unknown speed, a bad batch size, a layer the model lacks: one line
        raise UsageError(str(error).removeprefix("Tagger.tag: ")) from None
    return setting


def start_processes(device: str) -> tuple[Shard, str]:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (NCCL on GPUs, else gloo) and take this
    process's GPU; -> (this process's shard, its device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return Shard(rank, world, torch.distributed.barrier), device


def run_settings(cfg: DictConfig, setting: Setting, device: str) -> dict:
    """What decides the output besides the input: the model's weight files, the setting, batch size,
    quantization, device type (a resume with anything else is refused)."""
    model_dir = Path(cfg.model_dir)
    files = [model_dir / name for name in ("model.safetensors", EXITS_FILE, SELECTOR_FILE)]
    return {"model": [file_identity(f) for f in files if f.exists()], **setting.describe(),
            "speed": cfg.get("speed"), "quantize": cfg.get("quantize"), "batch_size": cfg.batch_size,
            "device": torch.device(device).type}


def tag(cfg: DictConfig) -> dict:
    """Tag ``cfg.input`` into ``cfg.output`` as ``cfg`` (tag.yaml) says; returns this process's summary."""
    require_settings(cfg)
    shard, device = start_processes(resolve_device(cfg.device))
    try:
        tagger = Tagger.load(cfg.model_dir, device, cfg.get("quantize"))
        setting = build_setting(cfg, tagger)
        summary = tag_file(lambda words: tagger.predict(words, setting, cfg.batch_size), cfg.input, cfg.output,
                           format=cfg.format, chunk_sentences=cfg.chunk_sentences, exit_layer=cfg.exit_layer,
                           resume=cfg.resume, settings={"model_dir": str(Path(cfg.model_dir).resolve()),
                                                        **run_settings(cfg, setting, device)},
                           shard=shard, progress_seconds=cfg.progress_seconds)
        if shard.rank == 0:
            note = " (CoNLL: text input gives word<TAB>tag lines)" if summary["format"] == "text" else ""
            print(f"tokexit.tag: wrote {cfg.output}{note}", file=sys.stderr)
        return summary
    finally:
        if shard.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="tag")
def main(cfg: DictConfig) -> None:
    try:
        tag(cfg)
    except (ValueError, FileNotFoundError) as e:  # a usage, data, model or resume error: one line, no traceback
        sys.exit(f"tokexit.tag: error: {e}")


if __name__ == "__main__":
    main()
