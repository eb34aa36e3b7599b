"""What the Hydra entry points share: a usage error that names the setting, the test for an unset one, and
building an object from a config group."""

from __future__ import annotations

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
