"""DynaBERT: turn a fine-tuned multi-exit classifier into one model that runs at several widths and depths.

``stage=1`` (width): rewire heads and neurons by importance, then distil the fine-tuned model (the teacher) into
every width at full depth: soft cross-entropy of the final logits + ``hidden_weight`` (0.1) × MSE of every
layer's hidden states, summed over the widths before one optimizer step. ``stage=2`` (width × depth): start from
the stage-1 model and distil into every (width, depth), the student's kept layers matched to the teacher's layers
they stand for, ``hidden_weight`` 1.0. ``stage=3`` (optional): fine-tune every sub-network on the gold labels.
Regression tasks get no logit term in stages 1-2 (hidden states only).
"""

from __future__ import annotations

import itertools

import lightning as L
import torch
import torch.nn.functional as F

from tokexit.data.classification import ClassificationTask
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.rewiring import importance, rewire
from tokexit.engine.subnetwork import SubNetwork
from tokexit.evaluation import classification_scores, gather_tables
from tokexit.lightning.tagging_module import adamw_with_warmup
from tokexit.model_io import load_classifier


def final_logits(model: MultiExitClassifier, states: list[torch.Tensor]) -> torch.Tensor:
    """(B, C) logits of the sub-network's last exit from its hidden states."""
    return model.exits[model.plan[-1][1]](model.pooler(states[-1]))


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens of (B, T, H) states."""
    m = mask[..., None].to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1])


class DynaBertModule(L.LightningModule):
    def __init__(
        self,
        labels: ClassificationTask,
        teacher: str,
        init_from: str | None = None,
        stage: int = 1,
        widths: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25),
        depths: tuple[float, ...] = (1.0, 0.75, 0.5),
        hidden_weight: float | None = None,
        logit_weight: float = 1.0,
        rewire_batches: int = 32,
        backbone_lr: float = 2e-5,
        head_lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        name: str = "dynabert",
        backbone: str | None = None,  # where the data module takes the tokenizer from (the teacher); unused here
    ):
        super().__init__()
        if stage not in (1, 2, 3):
            raise ValueError("model.stage must be 1 (width), 2 (width x depth) or 3 (fine-tuning)")
        self.save_hyperparameters(ignore=["labels"])
        self.labels = labels
        self.teacher, _, teacher_task, _ = load_classifier(teacher)
        if teacher_task.labels != labels.labels or teacher_task.regression != labels.regression:
            raise ValueError(f"{teacher}: the teacher's labels {teacher_task.labels} differ from the data's")
        self.teacher.requires_grad_(False)
        self.encoder, _, _, meta = load_classifier(init_from or teacher)
        self.encoder.train()
        self.depths = list(depths) if stage > 1 else [1.0]
        self.subnetworks = [SubNetwork(w, d) for w, d in itertools.product(widths, self.depths)]
        self.hidden_weight = hidden_weight if hidden_weight is not None else (0.1 if stage == 1 else 1.0)
        self.model_meta = {"dynabert": {"stage": stage, "widths": list(widths), "depths": self.depths,
                                        "teacher": str(teacher), "rewired": stage == 1 or
                                        meta.get("dynabert", {}).get("rewired", False)}}
        self.parts: list[torch.Tensor] = []
        self.scores: dict[str, list[dict]] = {}

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.labels.regression:
            return F.mse_loss(logits[:, 0], targets.float())
        return F.cross_entropy(logits, targets)

    def on_fit_start(self) -> None:
        if self.hparams.stage != 1 or self.hparams.rewire_batches <= 0:
            return
        loader = self.trainer.datamodule.train_dataloader()
        batches = [{k: v.to(self.device) for k, v in b.items()}
                   for b in itertools.islice(loader, self.hparams.rewire_batches)]
        model = self.encoder.use_subnetwork(SubNetwork())

        def loss(batch: dict) -> torch.Tensor:
            states = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            return self.task_loss(final_logits(model, states), batch["targets"])

        heads, neurons = importance(model, batches, loss)
        rewire(model, heads, neurons)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        self.teacher.eval()
        with torch.no_grad():
            teacher_states = self.teacher.hidden_states(ids, mask, types)
            teacher_probs = torch.softmax(final_logits(self.teacher, teacher_states), -1)
        total = 0.0
        for sub in self.subnetworks:
            student = self.encoder.use_subnetwork(sub)
            states = student.hidden_states(ids, mask, types)
            logits = final_logits(student, states)
            if self.hparams.stage == 3:
                loss = self.task_loss(logits, batch["targets"])
            else:
                hidden = sum(masked_mse(s, teacher_states[e], mask) for s, (_, e) in zip(states, student.plan,
                                                                                          strict=True))
                loss = self.hidden_weight * hidden
                if not self.labels.regression:
                    soft_ce = -(teacher_probs * torch.log_softmax(logits, -1)).sum(-1).mean()
                    loss = loss + self.hparams.logit_weight * soft_ce
            total = total + loss
        self.encoder.use_subnetwork(SubNetwork())
        self.log("train/loss", total, prog_bar=True, batch_size=len(ids))
        return total

    # evaluation: the final exit of every sub-network, scored per sub-network
    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        columns = [batch["index"].float(), batch["targets"].float()]
        for sub in self.subnetworks:
            model = self.encoder.use_subnetwork(sub)
            logits = final_logits(model, model.hidden_states(batch["input_ids"], batch["attention_mask"],
                                                             batch["token_type_ids"]))
            columns.append(logits[:, 0] if self.labels.regression else logits.argmax(-1).float())
        self.encoder.use_subnetwork(SubNetwork())
        self.parts.append(torch.stack(columns, 1).cpu())

    def _eval_end(self, split: str) -> None:
        table = gather_tables(torch.cat(self.parts) if self.parts else torch.zeros((0, 0)))
        self.parts = []
        if not table.numel():
            return
        index, slot = torch.unique(table[:, 0].long(), return_inverse=True)
        rows = torch.zeros((len(index), table.shape[1]))
        rows[slot] = table
        cast = (lambda x: x.tolist()) if self.labels.regression else (lambda x: x.long().tolist())
        metric, scores = self.labels.metric, []
        for sub, column in zip(self.subnetworks, rows[:, 2:].T, strict=True):
            s = {"width": sub.width, "depth": sub.depth, **classification_scores(cast(rows[:, 1]), cast(column),
                                                                                 self.labels)}
            scores.append(s)
            self.log(f"{'val' if split == 'validation' else split}/{metric}_w{sub.width}_d{sub.depth}", s[metric])
        self.scores[split] = scores
        self.log(f"{'val' if split == 'validation' else split}/{metric}",
                 sum(s[metric] for s in scores) / len(scores), prog_bar=True)

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
