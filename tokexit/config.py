"""What the Hydra entry points share: a usage error that names the setting, the test for an unset one, and
building an object from a config group."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf


class UsageError(ValueError):
    """A required setting is missing or unusable; the message names the setting (and the command form)."""


def hydra_choice(group: str) -> str | None:
    """The option the command line chose for config group ``group`` (``model=tiny`` -> ``"tiny"``), when the run
    was composed by Hydra's ``main``; None otherwise (e.g. a config composed in a test)."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group) or None


def unset(cfg, key: str) -> bool:
    """Whether ``key`` of ``cfg`` is absent, ``???``, null or blank."""
    value = cfg.get(key) if cfg is not None else None  # DictConfig.get gives None for ??? too
    return value is None or OmegaConf.is_missing(cfg, key) or not str(value).strip()


def build(node: dict, **overrides):
    """``instantiate`` a config group's node; the object's own ValueError (which names the setting) comes out
    unwrapped."""
    try:
        return instantiate(node, **overrides)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise e.__cause__ from None
        raise


def run_directory(output_dir, program: str) -> str:
    """Hydra's run directory (``hydra.run.dir``, where it writes its own logs): ``output_dir``, or a scratch
    directory where that cannot be made (not set, or an existing file), so that the entry point itself reports the
    problem in one line instead of Hydra failing first with a traceback."""
    if output_dir is None or str(output_dir) in ("", "???") or Path(str(output_dir)).is_file():
        return str(Path(os.environ.get("TMPDIR", "/tmp")) / f"tokexit-{program}-no-output_dir")
    return str(output_dir)


def require_output_dir(output_dir) -> None:
    """UsageError where ``output_dir`` names an existing file (a directory is written there)."""
    if output_dir is not None and Path(str(output_dir)).is_file():
        raise UsageError(f"output_dir={output_dir} is a file: give a directory (it is created if missing)")


OmegaConf.register_new_resolver("tokexit_run_dir", run_directory, replace=True)
