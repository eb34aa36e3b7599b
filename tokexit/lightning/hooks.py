"""What every tokexit LightningModule shares: joint-loss layer weights, the optimizer, and the validation/test
hooks routed to the module's ``_eval_step(batch)`` and ``_eval_end(split)``, and what a resumed run restores
beyond Lightning's own checkpoint."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from transformers import get_linear_schedule_with_warmup

log = logging.getLogger(__name__)

def layer_weights(num_layers: int, kind: str) -> torch.Tensor:
    """Joint-loss weights: ``linear`` (layer i gets i / Σ i, deeper exits count more) or ``uniform``."""
    if kind == "linear":
        w = torch.arange(1, num_layers + 1, dtype=torch.float)
    elif kind == "uniform":
        w = torch.ones(num_layers)
    else:
        raise ValueError(f"loss_weights must be 'linear' or 'uniform', not '{kind}'")
    return w / w.sum()


def adamw_with_warmup(module: L.LightningModule, encoder: torch.nn.Module) -> dict:
    """Fused AdamW with separate learning rates for the backbone (``backbone_lr``, no decay on biases and norms)
    and the exits and pooler (``head_lr``), and linear warm-up then decay over the run's steps."""
    hp = module.hparams
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [], "lr": hp.backbone_lr, "weight_decay": hp.weight_decay},
        {"params": [], "lr": hp.backbone_lr, "weight_decay": 0.0},
        {"params": [], "lr": hp.head_lr, "weight_decay": 0.0},
    ]
    for name, p in encoder.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(("exits.", "pooler.")):
            groups[2]["params"].append(p)
        else:
            groups[1 if name.endswith(no_decay) else 0]["params"].append(p)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], fused=True)
    total = module.trainer.estimated_stepping_batches
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * total), total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EvaluationHooks:
    """Mixin for a LightningModule with ``encoder``, ``_eval_step(batch)`` and ``_eval_end(split)`` (which fills
    ``scores[split]``). The class attributes tell ``tokexit.train`` what the module does."""

    #: the kinds of model (:attr:`tokexit.tasks.base.Task.kind`) the module trains
    kinds: tuple[str, ...] = ("token_tagger", "sequence_classifier")
    #: whether it predicts an unlabelled test file (into ``predictions["test"]``) rather than only scoring one
    predicts_unlabelled = False
    #: what one row of ``scores[split]`` is
    scored_per = "exit layer"
    #: more entries for the saved model's tokexit.json
    model_meta: dict | None = None
    resumed = False  # True once fit() has restored this module from a checkpoint

    def report(self, split: str = "test") -> dict:
        """The scores of ``split`` as metrics.json gives them: each exit layer's (``layers``) and the full
        model's (``full_depth``)."""
        scores = self.scores.get(split, [])
        return {"layers": [{"layer": i, **s} for i, s in enumerate(scores, start=1)], "subnetworks": None,
                "full_depth": scores[-1] if scores else None}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        self._eval_end("validation")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end("test")

    def configure_optimizers(self):
        return adamw_with_warmup(self, self.encoder)

    # resuming: the last validation's scores travel with the checkpoint (a run resumed after its final epoch
    # still reports them); ``resumed`` tells ``on_fit_start`` hooks that the weights come from a checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokexit_scores"] = self.scores

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:  # not when test() loads the best checkpoint
            self.resumed = True
            self.scores.update(checkpoint.get("tokexit_scores", {}))


def check_evaluation_files(status, where: dict[str, str], unlabelled_validation: str, test_predictions: str) -> None:
    """The validation and test checks every data module makes before training: an unlabelled validation file is an
    error (``unlabelled_validation`` says what it lacks); an empty or absent one means no model selection (the
    last epoch is kept); an empty test file is trained past, an unlabelled one predicted into
    ``output_dir/<test_predictions>``, not scored. ``status(split)`` is the data module's file status."""
    validation = status("validation")
    if validation == "unlabelled":
        raise ValueError(f"{where['validation']}: {unlabelled_validation}: validation scores the model after every "
                         "epoch to keep the best one, so it needs gold labels; give a labelled file, or "
                         "data.validation_file=null to train without validation")
    if validation == "empty":
        log.warning("%s is empty: no validation, so no model selection: the model of the last epoch is kept",
                    where["validation"])
    elif validation == "none":
        log.info("no data.validation_file: no model selection, the model of the last epoch is kept")
    test = status("test")
    if test == "empty":
        log.warning("%s is empty: the model will be trained and saved, but not tested", where["test"])
    elif test == "unlabelled":
        log.info("%s has no labels: after training it is predicted (output_dir/%s), not scored", where["test"],
                 test_predictions)
