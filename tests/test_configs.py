"""Every shipped Hydra config composes: each file of every group (found by globbing tokexit/conf, so a new YAML is
covered without touching this file) with each primary config that uses its group, interpolations resolved
(``???`` values get a dummy), and every ``_target_`` importable with keys its signature accepts.
A user's own config directory (``hydra.searchpath``, what ``--config-dir`` adds) composes with the shipped groups."""

from __future__ import annotations

import functools
import inspect
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from tokexit import CONFIG_DIR

PRIMARIES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
GROUPS = sorted(d.name for d in CONFIG_DIR.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
OPTIONS = sorted((g, p.relative_to(CONFIG_DIR / g).with_suffix("").as_posix())
                 for g in GROUPS for p in (CONFIG_DIR / g).rglob("*.yaml"))
# keys an entry point takes out of a config before it instantiates the rest
ENTRY_POINT_KEYS = {"exit": {"target_speedup"}, "fate": {"target_speedup"}}
# configs an entry point reads but never instantiates (their _target_ must still import): evaluate takes only the
# test/validation files and reader options from data=NAME, with its own tagging reader keys merged in
NOT_INSTANTIATED = {("evaluate", "data")}
# the value a ``???`` gets when composing without a user's command line
DUMMY = "/nonexistent/dummy"


def test_configs_are_found():
    assert {"train", "evaluate", "export"} <= set(PRIMARIES)
    assert {"data", "model", "trainer", "exit", "experiment"} <= set(GROUPS)
    assert len(OPTIONS) >= 30


def _compose(primary: str, overrides: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(primary, overrides=overrides)


@functools.cache
def _groups_of(primary: str) -> frozenset[str]:
    """The groups in the primary config's defaults list (the choices Hydra records, hydra/* left out)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(primary, return_hydra_config=True)
    return frozenset(g for g in cfg.hydra.runtime.choices if not g.startswith("hydra/"))


def _missing(cfg, prefix: str = "") -> list[str]:
    """Dotted keys of ``???`` values, without resolving interpolations (OmegaConf.missing_keys resolves them)."""
    found = []
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        path = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix[:-1]}[{key}]"
        node = cfg._get_node(key)
        if OmegaConf.is_missing(cfg, key):
            found.append(path)
        elif isinstance(node, DictConfig | ListConfig) and not node._is_interpolation():
            found += _missing(node, f"{path}.")
    return found


def _targets(node, path: str = ""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path or "<root>", node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def check_composes(primary: str, overrides: list[str], config_dir: Path = CONFIG_DIR) -> dict:
    """Compose, give every ``???`` a dummy, resolve everything, import every ``_target_``; the resolved config."""
    cfg = _compose(primary, overrides, config_dir)
    for key in _missing(cfg):
        OmegaConf.update(cfg, key, DUMMY)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for path, node in _targets(resolved):
        target = get_object(node["_target_"])
        assert callable(target), f"{primary} {overrides}: {path}._target_={node['_target_']} is not callable"
        if (primary, path) in NOT_INSTANTIATED:
            continue
        kwargs = {k: v for k, v in node.items()
                  if not (k.startswith("_") and k.endswith("_")) and k not in ENTRY_POINT_KEYS.get(path, ())}
        try:
            inspect.signature(target).bind_partial(**kwargs)
        except TypeError as e:
            raise AssertionError(f"{primary} {overrides}: {path} ({node['_target_']}) does not take its keys: {e}") \
                from None
    return resolved


@pytest.mark.parametrize("primary", PRIMARIES)
def test_primary_config_composes(primary):
    check_composes(primary, [])


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_group_option_composes(group, option):
    """With every primary config whose defaults list has the group; a group no primary lists is added to train."""
    users = [p for p in PRIMARIES if group in _groups_of(p)]
    for primary in users or ["train"]:
        resolved = check_composes(primary, [f"{group}={option}" if users else f"+{group}={option}"])
        assert group in resolved or group == "experiment", f"{primary}: {group}={option} left no '{group}' key"


BROKEN = {  # group/option: a broken YAML of that kind
    "data/bad_interpolation": "defaults:\n  - wnut16\n  - _self_\n\nname: x\ntrain_file: ${data_rot}/train.txt\n",
    "exit/unknown_key": "_target_: tokexit.exits.static.StaticExit\nlayr: 3\n",
    "model/bad_target": "defaults:\n  - minilm\n  - _self_\n\n_target_: tokexit.lightning.NoSuchModule\n",
    "trainer/bad_syntax": "defaults:\n  - default\n  - _self_\n\nmax_epochs: [1, 2\n",
    "experiment/bad_reference": "# @package _global_\ndefaults:\n  - override /data: no_such_data\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_yaml_fails(tmp_path, name):
    """The checks above catch a broken config (on a copy of the shipped configs with one broken file added)."""
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf, ignore=shutil.ignore_patterns("__pycache__"))
    group, option = name.split("/")
    (conf / group / f"{option}.yaml").write_text(BROKEN[name], encoding="utf-8")
    primary = "evaluate" if group == "exit" else "train"
    with pytest.raises(Exception):  # noqa: B017 - each breaks in its own way
        check_composes(primary, [f"{group}={option}"], conf)


def write_user_configs(root: Path, data_dir: Path) -> Path:
    """A user's own config directory: a data set next to the shipped ones and an experiment that selects it."""
    (root / "data").mkdir(parents=True)
    (root / "experiment").mkdir()
    (root / "data" / "mydata.yaml").write_text(
        "# a user's own CoNLL files, read like WNUT-16\n"
        "defaults:\n  - wnut16\n  - _self_\n\n"
        f"name: mydata\ntrain_file: {data_dir}/train.txt\nvalidation_file: {data_dir}/dev.txt\n"
        f"test_file: {data_dir}/test.txt\nbatch_size: 8\n", encoding="utf-8")
    (root / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: mydata\n  - override /model: tiny\n\n"
        "trainer:\n  max_epochs: 1\noutput_dir: runs/mine\n", encoding="utf-8")
    return root


def test_user_config_dir_on_search_path(tmp_path):
    user = write_user_configs(tmp_path / "myconf", tmp_path / "corpus")
    searchpath = f"hydra.searchpath=[file://{user}]"
    cfg = check_composes("train", [searchpath, "data=mydata", "model=tiny"])
    assert cfg["data"]["name"] == "mydata"
    assert cfg["data"]["train_file"] == f"{tmp_path / 'corpus'}/train.txt"
    assert cfg["data"]["_target_"] == "tokexit.lightning.TaggingDataModule"  # from the shipped wnut16
    assert cfg["data"]["tokenizer"] == "minilm-l6"
    assert cfg["output_dir"] == "runs/mydata-tiny"

    cfg = check_composes("train", [searchpath, "experiment=mine"])
    assert (cfg["data"]["name"], cfg["model"]["name"], cfg["trainer"]["max_epochs"]) == ("mydata", "tiny", 1)
    assert cfg["output_dir"] == "runs/mine"

    # the shipped options stay available next to the user's
    assert check_composes("train", [searchpath, "data=conll2003"])["data"]["name"] == "conll2003"
    # without the search path the user's option is unknown
    with pytest.raises(Exception, match="mydata"):
        _compose("train", ["data=mydata"])
