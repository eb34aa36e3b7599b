"""Train a multi-exit tagger or classifier: ``python -m tokexit.train [data=...] [model=...] [trainer=...]
[experiment=...] [key=value]``. Sequence-labeling data (``data=conll2003``…) trains a tagger, sentence(-pair)
data (``data=sst2``…, GLUE TSV files) a classifier; the model config must match (``model=minilm`` /
``model=minilm_classifier``).

Every file is read and checked before training starts. Writes ``output_dir/model`` (a model directory, see
:mod:`tokexit.model_io`), ``output_dir/metrics.json`` (test scores of every exit layer; an unlabelled test file is
not scored but tagged into ``output_dir/test_predictions.conll`` or ``.tsv``) and Lightning checkpoints and CSV
logs under ``output_dir``:
``checkpoints/best.ckpt`` (best validation score) and ``checkpoints/last.ckpt`` (end of the latest epoch). After a
crash, the same command with ``resume=true`` continues from ``last.ckpt`` (``ckpt_path=...``: from any checkpoint)
with the optimizer, scheduler, loop, best-checkpoint and random generator states, as if never interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf

from tokexit import CONFIG_DIR
from tokexit.config import UsageError, hydra_choice, require_output_dir
from tokexit.data.embedded import is_embedded
from tokexit.lightning.checkpointing import AtomicCheckpointIO, RngStateCheckpoint
from tokexit.model_io import save_model
from tokexit.reporting.output import command_line, layer_table, write_json
from tokexit.tasks import task_for

log = logging.getLogger("tokexit.train")


class EpochTimer(Callback):
    """Wall-clock seconds of every training epoch (validation excluded)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(round(time.perf_counter() - self._start, 1))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["tokexit_epoch_seconds"] = list(self.seconds)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.state.fn == TrainerFn.FITTING:  # a resumed run goes on counting; test() loading best.ckpt does not
            self.seconds = list(checkpoint.get("tokexit_epoch_seconds", []))


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint ``fit`` continues from: ``ckpt_path`` (must exist), else with ``resume=true``
    ``output_dir/checkpoints/last.ckpt`` when there is one, else none (a fresh start)."""
    explicit = cfg.get("ckpt_path")
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"ckpt_path={explicit}: no such checkpoint file (set ckpt_path=null to start "
                                    "from scratch, or resume=true to continue from output_dir/checkpoints/last.ckpt)")
        log.info("continuing from ckpt_path=%s", explicit)
        return str(explicit)
    last = out / "checkpoints" / "last.ckpt"
    if cfg.get("resume"):
        if last.is_file():
            log.info("resume=true: continuing from %s", last)
            return str(last)
        log.warning("resume=true but %s does not exist: starting from scratch", last)
    elif last.is_file():
        log.warning("%s is left from an earlier run: starting from scratch (resume=true would continue it); it is "
                    "overwritten at the end of the first epoch", last)
    return None


SPLITS = ("train", "validation", "test")


def shipped_data_files(cfg: DictConfig) -> dict | None:
    """The three files of the shipped data config named ``cfg.data.name`` (with this run's ``data_root``), or
    None when tokexit ships no such config (a user's own, e.g. from ``--config-dir``)."""

    def load(name: str) -> DictConfig | None:
        path = CONFIG_DIR / "data" / f"{name}.yaml"
        if not path.is_file():
            return None
        node = OmegaConf.load(path)
        merged = OmegaConf.create({})
        for parent in node.pop("defaults", None) or []:  # e.g. conll2003 extends wnut16
            if parent == "_self_":
                continue
            base = load(parent) if isinstance(parent, str) else None
            if base is None:
                return None
            merged = OmegaConf.merge(merged, base)
        return OmegaConf.merge(merged, node)

    shipped = load(str(cfg.data.name))
    if shipped is None:
        return None
    root = OmegaConf.create({"data_root": cfg.get("data_root"), "data": shipped})
    return {split: root.data.get(f"{split}_file") for split in SPLITS}


def _same_file(a: str | None, b: str | None) -> bool:
    if a is None or b is None or is_embedded(str(a)) or is_embedded(str(b)):
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def data_files(cfg: DictConfig) -> dict[str, str | None]:
    """The run's three data files by split (None: not given)."""
    return {split: None if cfg.data.get(f"{split}_file") is None else str(cfg.data.get(f"{split}_file"))
            for split in SPLITS}


def describe_data(cfg: DictConfig) -> dict:
    """What a run trained and tested on, for metrics.json: ``data`` is the data config's name when its own files
    were read and ``custom`` when any file differs (``data.train_file=...`` on the command line); ``data_config``
    is the config's name either way; ``files`` are the three paths (None: not given)."""
    files = data_files(cfg)
    shipped = shipped_data_files(cfg)
    own = shipped is None or all(_same_file(files[s], shipped[s]) for s in SPLITS)
    return {"data": str(cfg.data.name) if own else "custom", "data_config": str(cfg.data.name), "files": files}


def require_own_files(cfg: DictConfig) -> None:
    """Where the command line gives some of the data files, the others must not silently stay the data config's
    own (``data.train_file=mine.conll`` alone would validate and test on the embedded WNUT-16 splits): UsageError
    asking for them (a path, or null for none)."""
    shipped = shipped_data_files(cfg)
    if shipped is None:
        return
    files = data_files(cfg)
    mine = [s for s in SPLITS if not _same_file(files[s], shipped[s])]
    kept = [s for s in SPLITS if s not in mine and files[s] is not None]
    if mine and kept:
        given = ", ".join(f"data.{s}_file={files[s]}" for s in mine)
        raise UsageError(f"{given} given, but {', '.join(f'data.{s}_file' for s in kept)} still "
                         f"{'reads' if len(kept) == 1 else 'read'} data={cfg.data.name}'s own "
                         f"({', '.join(str(files[s]) for s in kept)}): give "
                         f"{' and '.join(f'data.{s}_file=PATH' for s in kept)} too (or =null for none)")


def train(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    require_output_dir(cfg.output_dir)
    require_own_files(cfg)
    out = Path(cfg.output_dir)
    resume_from = resume_checkpoint(cfg, out)
    data = instantiate(cfg.data, _convert_="all")
    labels = data.prepare()
    task = task_for(labels)
    trains = get_class(cfg.model._target_).kinds
    if task.kind not in trains:
        described = describe_data(cfg)
        data_given = (f"data={described['data_config']}" if described["data"] != "custom" else
                      "the data files given (" + ", ".join(f"data.{s}_file" for s, f in described["files"].items()
                                                          if f is not None) + ")")
        model_given = hydra_choice("model") or cfg.model.name
        raise UsageError(f"{data_given}: a {labels.task} task, but model={model_given} builds "
                         f"{cfg.model._target_}: use model=minilm_classifier for sentence(-pair) data and "
                         "model=minilm for sequence labeling")
    # partial: a LabelSet passed to instantiate would be turned into a config
    module = instantiate(cfg.model, _partial_=True, _convert_="all")(labels=labels)
    test_status = data.status("test")  # none | empty | unlabelled | labelled (checked and logged by prepare)
    if test_status == "unlabelled" and not module.predicts_unlabelled:
        raise ValueError(f"data.test_file={data.files['test']}: no labels, and model={cfg.model.name} can only score "
                         "a test file, not tag one: give a labelled test file, or data.test_file=null")
    metric = task.metric
    # best.ckpt (the best validation score so far) and last.ckpt (every epoch's end, for resume): fixed names,
    # overwritten rather than versioned, so that resume=true always finds the latest state
    selects = data.status("validation") == "labelled"  # no validation data: no model selection, the last epoch
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor=f"val/{metric}" if selects else None,
                                 mode="max", filename="best", save_top_k=1, enable_version_counter=False)
    # last.ckpt on its own callback: Lightning's save_last writes it only in an epoch that also saved a best.ckpt;
    # mode="min" only tells the two callbacks' states apart (nothing is monitored)
    latest = ModelCheckpoint(dirpath=out / "checkpoints", monitor=None, mode="min", filename="last", save_top_k=1,
                             enable_version_counter=False)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
                          callbacks=[checkpoint, latest, timer, RngStateCheckpoint()], plugins=[AtomicCheckpointIO()])
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    if test_status in ("labelled", "unlabelled"):  # an unlabelled test file is tagged, not scored
        trainer.test(module, datamodule=data, ckpt_path="best" if checkpoint.best_model_path else None)
    if not trainer.is_global_zero:
        return {}
    test = module.scores.get("test", [])
    described = describe_data(cfg)
    unlabelled = test_status == "unlabelled"  # tagged (or classified) after training, not scored
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command_line(),
        **described,  # data (config name, or "custom" for other files), data_config, files
        "model": cfg.model.name,
        "task": labels.task,
        "metric": metric,
        "test_status": test_status,  # labelled (scored) | unlabelled (tagged, not scored) | empty | none
        "test_predictions": task.write_test_predictions(module.predictions["test"], data, out) if unlabelled else None,
        **module.report("test"),  # layers (every exit's scores), subnetworks, full_depth[, reduction]
        "validation_layers": module.scores.get("validation", []),
        "counts": data.counts(),
        "unseen_test_labels": data.unseen_labels.get("test", {}),
        "train_epoch_seconds": timer.seconds,
        "best_checkpoint": checkpoint.best_model_path,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(out / "metrics.json", result)
    if cfg.save_model:
        save_model(module.encoder, data.tokenizer, labels, out / "model", data.max_length, module.model_meta)
    test_file = data.files["test"]
    if test:
        print(layer_table(test, metric, f"\n{described['data']} test, {cfg.model.name}: {metric} per "
                          f"{module.scored_per}"))
    elif test_status == "unlabelled":
        print(f"\ndata.test_file={test_file} has no labels: {task.verbs[1]}, not scored; "
              f"predictions: {result['test_predictions']}")
    elif test_status == "empty":
        print(f"\ndata.test_file={test_file} is empty: nothing to test")
    else:
        print("\nno data.test_file: not tested")
    print(f"model: {out / 'model' if cfg.save_model else 'not saved (save_model=false)'}   "
          f"metrics: {out / 'metrics.json'}")
    return result


# an absolute config path: the packaged configs are found under python -m, console scripts and wheel installs
# alike (Hydra's pkg:// lookup, used for console scripts, would need a tokexit/conf/__init__.py)
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ValueError, FileNotFoundError) as e:  # a usage or data error (files are checked first): one line
        sys.exit(f"tokexit.train: error: {e}")


if __name__ == "__main__":
    main()
