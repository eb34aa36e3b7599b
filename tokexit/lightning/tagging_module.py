"""LightningModule: joint training of all exits of a :class:`MultiExitEncoder`, per-layer validation."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from tokexit.backbones import load_backbone
from tokexit.data.encoding import IGNORE
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder
from tokexit.inference.collect import PredictionCollector, gather_tables, per_sentence
from tokexit.lightning.hooks import EvaluationHooks, layer_weights
from tokexit.reporting.scores import main_metric, score_layers


class MultiExitTaggerModule(EvaluationHooks, L.LightningModule):
    kinds = ("token_tagger",)
    predicts_unlabelled = True

    def __init__(
        self,
        labels: LabelSet,
        backbone: str = "minilm-l6",
        random_init: bool = False,
        config_overrides: dict | None = None,
        loss_weights: str = "linear",
        backbone_lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        head_dropout: float | None = None,
        name: str = "model",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["labels"])
        self.hparams["label_set"] = labels.to_dict()
        self.labels = labels
        overrides = dict(config_overrides) if config_overrides else None
        self.encoder = MultiExitEncoder(
            load_backbone(backbone, random_init=random_init, config_overrides=overrides),
            num_labels=len(labels.labels),
            head_dropout=head_dropout,
        )
        pooler = getattr(self.encoder.backbone, "pooler", None)
        if pooler is not None:  # tagging never reads the pooler; frozen, DDP does not wait for its gradients
            pooler.requires_grad_(False)
        self.register_buffer("loss_weights", layer_weights(self.encoder.num_layers, loss_weights), persistent=False)
        self.collector = PredictionCollector()
        self.scores: dict[str, list[dict]] = {}
        # per split without labels (a test file to tag): per sentence, (L, n_words) label ids of every exit
        self.predictions: dict[str, list[torch.Tensor]] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(L, N, C) logits of every exit for every word of the batch."""
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch["word_positions"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)  # (L, N, C)
        gold = batch["labels"][batch["word_positions"] >= 0]  # (N,)
        per_layer = torch.stack([F.cross_entropy(z, gold, ignore_index=IGNORE) for z in logits])  # (L,)
        loss = (self.loss_weights * per_layer).sum()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        self.log("train/loss_last", per_layer[-1], batch_size=len(batch["input_ids"]))
        return loss

    # evaluation: collect each exit's argmax per owned word, score once per epoch over all ranks
    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        self.collector.add(batch, self(batch).argmax(-1))  # (L, N)

    def _eval_end(self, split: str) -> None:
        table = gather_tables(self.collector.table())
        self.collector.reset()
        corpus = self.trainer.datamodule.corpus(split)
        predictions = per_sentence(table, corpus)  # raises if a word has no prediction
        if corpus.sentences and corpus.sentences[0].tags is None:  # unlabelled: tagged, not scored
            self.predictions[split], self.scores[split] = predictions, []
            return
        scores = score_layers(corpus, self.labels.labels, self.labels.task, predictions)
        self.scores[split] = scores
        metric = main_metric(self.labels.task)
        prefix = "val" if split == "validation" else split
        for i, s in enumerate(scores, start=1):
            self.log(f"{prefix}/{metric}_layer{i}", s[metric], sync_dist=False)
        self.log(f"{prefix}/{metric}", scores[-1][metric], prog_bar=True, sync_dist=False)
        self.log(f"{prefix}/{metric}_mean", sum(s[metric] for s in scores) / len(scores), sync_dist=False)
