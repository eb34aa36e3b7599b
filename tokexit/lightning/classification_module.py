"""LightningModule: joint training of every exit of a :class:`MultiExitClassifier` (PABEE's weighted loss),
optionally with FastBERT-style self-distillation of the earlier exits from the last one; per-layer validation."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from tokexit.backbones import load_backbone
from tokexit.data.classification import ClassificationTask
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.inference.collect import gather_tables, unique_examples
from tokexit.lightning.hooks import EvaluationHooks, layer_weights
from tokexit.reporting.scores import classification_scores


def exit_losses(logits: torch.Tensor, targets: torch.Tensor, regression: bool) -> torch.Tensor:
    """(S, B, C) logits of every exit -> (S,) loss of each exit: cross-entropy, or MSE for regression."""
    if regression:
        return ((logits[..., 0] - targets[None].float()) ** 2).mean(1)
    return torch.stack([F.cross_entropy(z, targets) for z in logits])


def layer_predictions(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """(S, B, C) -> (S, B) class ids or values."""
    return logits[..., 0] if regression else logits.argmax(-1)


class MultiExitClassifierModule(EvaluationHooks, L.LightningModule):
    kinds = ("sequence_classifier",)
    predicts_unlabelled = True

    def __init__(
        self,
        labels: ClassificationTask,
        backbone: str = "minilm-l6",
        random_init: bool = False,
        config_overrides: dict | None = None,
        loss_weights: str = "linear",
        backbone_lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        head_dropout: float | None = None,
        self_distillation: float = 0.0,
        pooling: str = "cls",
        name: str = "model",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["labels"])
        self.hparams["task"] = labels.to_dict()
        self.labels = labels
        overrides = dict(config_overrides) if config_overrides else None
        self.encoder = MultiExitClassifier(
            load_backbone(backbone, random_init=random_init, config_overrides=overrides),
            num_labels=labels.num_outputs,
            head_dropout=head_dropout,
            pooling=pooling,
        )
        self.register_buffer("loss_weights", layer_weights(self.encoder.num_layers, loss_weights), persistent=False)
        self.parts: list[torch.Tensor] = []
        self.scores: dict[str, list[dict]] = {}
        # per split without labels (a test file to label): (N, S) predictions of every exit, in input order
        self.predictions: dict[str, torch.Tensor] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(S, B, C) logits of every exit."""
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)  # (S, B, C)
        per_layer = exit_losses(logits, batch["targets"], self.labels.regression)  # (S,)
        loss = (self.loss_weights * per_layer).sum()
        size = len(batch["input_ids"])
        if self.hparams.self_distillation > 0 and not self.labels.regression and len(logits) > 1:
            teacher = torch.softmax(logits[-1].detach(), -1)  # (B, C)
            kl = torch.stack([F.kl_div(torch.log_softmax(z, -1), teacher, reduction="batchmean") for z in logits[:-1]])
            loss = loss + self.hparams.self_distillation * kl.mean()
            self.log("train/distillation", kl.mean(), batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_last", per_layer[-1], batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        preds = layer_predictions(self(batch), self.labels.regression).float()  # (S, B)
        self.parts.append(torch.cat([batch["index"][None].float(), batch["targets"][None].float(), preds]).T.cpu())

    def _eval_end(self, split: str) -> None:
        table = gather_tables(torch.cat(self.parts) if self.parts else torch.zeros((0, 0)))
        self.parts = []
        if not table.numel():
            return
        rows = unique_examples(table)
        examples = self.trainer.datamodule.corpus(split)
        if len(rows) != len(examples):  # nothing may be dropped silently
            raise RuntimeError(f"{self.trainer.datamodule.files[split]}: {len(examples)} examples but {len(rows)} "
                               "predictions")
        if examples[0].label is None:  # unlabelled: the model labels it, nothing is scored
            self.predictions[split], self.scores[split] = rows[:, 2:], []
            return
        gold = rows[:, 1] if self.labels.regression else rows[:, 1].long()
        scores = []
        for column in rows[:, 2:].T:
            pred = column if self.labels.regression else column.long()
            scores.append(classification_scores(gold.tolist(), pred.tolist(), self.labels))
        self.scores[split] = scores
        metric = self.labels.metric
        prefix = "val" if split == "validation" else split
        for i, s in enumerate(scores, start=1):
            self.log(f"{prefix}/{metric}_layer{i}", s[metric], sync_dist=False)
        self.log(f"{prefix}/{metric}", scores[-1][metric], prog_bar=True, sync_dist=False)
