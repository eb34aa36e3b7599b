"""Train a multi-exit tagger or classifier: ``python -m tokexit.train [data=...] [model=...] [trainer=...]
[experiment=...] [key=value]``. Sequence-labeling data (``data=conll2003``…) trains a tagger, sentence(-pair)
data (``data=sst2``…, GLUE TSV files) a classifier; the model config must match (``model=minilm`` /
``model=minilm_classifier``).

Writes ``output_dir/model`` (a model directory, see :mod:`tokexit.model_io`), ``output_dir/metrics.json``
(test scores of every exit layer) and Lightning checkpoints and CSV logs under ``output_dir``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from tokexit.evaluation import main_metric
from tokexit.model_io import save_model
from tokexit.reporting import command_line, layer_table, write_json

log = logging.getLogger("tokexit.train")


class EpochTimer(Callback):
    """Wall-clock seconds of every training epoch (validation excluded)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(round(time.perf_counter() - self._start, 1))


def train(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    data = instantiate(cfg.data, _convert_="all")
    labels = data.prepare()
    # partial: a LabelSet passed to instantiate would be turned into a config
    classifier = labels.task in ("classification", "regression")
    if cfg.model._target_.endswith("DynaBertModule"):
        pass  # distils whichever kind of model its teacher is
    elif classifier != cfg.model._target_.endswith("ClassifierModule"):
        raise ValueError(f"data={cfg.data.name} is a {labels.task} task but model={cfg.model.name} builds "
                         f"{cfg.model._target_}: use model=minilm_classifier for sentence(-pair) data and "
                         "model=minilm for sequence labeling")
    module = instantiate(cfg.model, _partial_=True, _convert_="all")(labels=labels)
    metric = labels.metric if classifier else main_metric(labels.task)
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor=f"val/{metric}", mode="max",
                                 filename="best", save_top_k=1)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
                          callbacks=[checkpoint, timer])
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, ckpt_path="best" if checkpoint.best_model_path else None)
    if not trainer.is_global_zero:
        return {}
    test = module.scores["test"]
    result = {
        "command": command_line(),
        "data": cfg.data.name,
        "model": cfg.model.name,
        "task": labels.task,
        "metric": metric,
        "layers": [] if hasattr(module, "subnetworks") else [{"layer": i, **s} for i, s in enumerate(test, start=1)],
        "subnetworks": test if hasattr(module, "subnetworks") else None,
        "full_depth": test[0] if hasattr(module, "subnetworks") else test[-1],
        "validation_layers": module.scores.get("validation", []),
        "counts": data.counts(),
        "unseen_test_labels": getattr(data, "unseen_labels", {}).get("test", {}),
        "train_epoch_seconds": timer.seconds,
        "best_checkpoint": checkpoint.best_model_path,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(out / "metrics.json", result)
    if cfg.save_model:
        save_model(module.encoder, data.tokenizer, labels, out / "model", data.max_length,
                   getattr(module, "model_meta", None))
    per = "sub-network" if hasattr(module, "subnetworks") else "exit layer"
    print(layer_table(test, metric, f"\n{cfg.data.name} test, {cfg.model.name}: {metric} per {per}"))
    print(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
