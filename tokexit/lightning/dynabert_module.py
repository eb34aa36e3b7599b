"""DynaBERT: turn a fine-tuned multi-exit classifier or tagger into one model that runs at several widths and
depths (a tagger made narrower this way still exits early, token by token, with any labeling exit policy).

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
from tokexit.data.encoding import IGNORE
from tokexit.data.tagging import LabelSet
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.rewiring import importance, rewire
from tokexit.engine.subnetwork import SubNetwork
from tokexit.inference.collect import PredictionCollector, gather_tables, per_sentence, unique_examples
from tokexit.lightning.hooks import EvaluationHooks
from tokexit.model_io import load_model
from tokexit.reporting.scores import classification_scores, score
from tokexit.tasks import task_for


def final_logits(model: MultiExitEncoder, states: list[torch.Tensor], batch: dict) -> torch.Tensor:
    """Logits of the sub-network's last exit from its hidden states: (B, C) for a classifier, (N, C) for the
    N words of a tagger's batch."""
    head = model.exits[model.plan[-1][1]]
    if isinstance(model, MultiExitClassifier):
        return head(model.pooler(states[-1], batch["attention_mask"]))
    rows, cols = torch.nonzero(batch["word_positions"] >= 0, as_tuple=True)
    return head(states[-1][rows, batch["word_positions"][rows, cols]])


def targets(batch: dict) -> torch.Tensor:
    """(B,) class ids or values of a classification batch; (N,) word labels of a tagging batch."""
    if "targets" in batch:
        return batch["targets"]
    return batch["labels"][batch["word_positions"] >= 0]


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens of (B, T, H) states."""
    m = mask[..., None].to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1])


class DynaBertModule(EvaluationHooks, L.LightningModule):
    scored_per = "sub-network"

    def __init__(
        self,
        labels: ClassificationTask | LabelSet,
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
        self.regression = getattr(labels, "regression", False)
        self.teacher, _, taught, _ = load_model(teacher)  # a tagger or a classifier, whichever the directory holds
        if taught.labels.labels != labels.labels or taught.name != labels.task:
            raise ValueError(f"{teacher}: the teacher's labels {taught.labels.labels} differ from the data's")
        self.teacher.requires_grad_(False)
        self.encoder, _, _, meta = load_model(init_from or teacher)
        self.encoder.train()
        self.depths = list(depths) if stage > 1 else [1.0]
        self.subnetworks = [SubNetwork(w, d) for w, d in itertools.product(widths, self.depths)]
        self.hidden_weight = hidden_weight if hidden_weight is not None else (0.1 if stage == 1 else 1.0)
        self.model_meta = {"dynabert": {"stage": stage, "widths": list(widths), "depths": self.depths,
                                        "teacher": str(teacher), "rewired": stage == 1 or
                                        meta.get("dynabert", {}).get("rewired", False)}}
        self.parts: list[torch.Tensor] = []
        self.collector = PredictionCollector()
        self.scores: dict[str, list[dict]] = {}

    def task_loss(self, logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits[:, 0], gold.float())
        return F.cross_entropy(logits, gold, ignore_index=IGNORE)

    def hidden_states(self, model: MultiExitEncoder, batch: dict) -> list[torch.Tensor]:
        return model.hidden_states(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def on_fit_start(self) -> None:
        if self.hparams.stage != 1 or self.hparams.rewire_batches <= 0 or self.resumed:
            return  # a resumed run's checkpoint holds the rewired weights (and the RNG states after rewiring)
        loader = self.trainer.datamodule.train_dataloader()
        batches = [{k: v.to(self.device) for k, v in b.items()}
                   for b in itertools.islice(loader, self.hparams.rewire_batches)]
        model = self.encoder.use_subnetwork(SubNetwork())

        def loss(batch: dict) -> torch.Tensor:
            return self.task_loss(final_logits(model, self.hidden_states(model, batch), batch), targets(batch))

        heads, neurons = importance(model, batches, loss)
        rewire(model, heads, neurons)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        mask = batch["attention_mask"]
        self.teacher.eval()
        with torch.no_grad():
            teacher_states = self.hidden_states(self.teacher, batch)
            teacher_probs = torch.softmax(final_logits(self.teacher, teacher_states, batch), -1)
        total = 0.0
        for sub in self.subnetworks:
            student = self.encoder.use_subnetwork(sub)
            states = self.hidden_states(student, batch)
            logits = final_logits(student, states, batch)
            if self.hparams.stage == 3:
                loss = self.task_loss(logits, targets(batch))
            else:
                hidden = sum(masked_mse(s, teacher_states[e], mask) for s, (_, e) in zip(states, student.plan,
                                                                                          strict=True))
                loss = self.hidden_weight * hidden
                if not self.regression:
                    soft_ce = -(teacher_probs * torch.log_softmax(logits, -1)).sum(-1).mean()
                    loss = loss + self.hparams.logit_weight * soft_ce
            total = total + loss
        self.encoder.use_subnetwork(SubNetwork())
        self.log("train/loss", total, prog_bar=True, batch_size=len(mask))
        return total

    # evaluation: the final exit of every sub-network, scored per sub-network
    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        columns = []
        for sub in self.subnetworks:
            model = self.encoder.use_subnetwork(sub)
            logits = final_logits(model, self.hidden_states(model, batch), batch)
            columns.append(logits[:, 0] if self.regression else logits.argmax(-1).float())
        self.encoder.use_subnetwork(SubNetwork())
        if isinstance(self.encoder, MultiExitClassifier):
            self.parts.append(torch.stack([batch["index"].float(), batch["targets"].float(), *columns], 1).cpu())
        else:
            self.collector.add(batch, torch.stack(columns))  # (K, N) one row per sub-network

    def _scores(self, split: str) -> list[dict]:
        if not isinstance(self.encoder, MultiExitClassifier):
            table = gather_tables(self.collector.table())
            self.collector.reset()
            corpus = self.trainer.datamodule.corpus(split)
            gold = [s.tags for s in corpus.sentences]
            return [score(gold, [[self.labels.labels[k] for k in p[i].tolist()] for p in per_sentence(table, corpus)],
                          self.labels.task) for i in range(len(self.subnetworks))]
        table = gather_tables(torch.cat(self.parts) if self.parts else torch.zeros((0, 0)))
        self.parts = []
        rows = unique_examples(table)
        cast = (lambda x: x.tolist()) if self.regression else (lambda x: x.long().tolist())
        return [classification_scores(cast(rows[:, 1]), cast(column), self.labels) for column in rows[:, 2:].T]

    def _eval_end(self, split: str) -> None:
        metric = task_for(self.labels).metric
        prefix = "val" if split == "validation" else split
        scores = []
        for sub, s in zip(self.subnetworks, self._scores(split), strict=True):
            scores.append({"width": sub.width, "depth": sub.depth, **s})
            self.log(f"{prefix}/{metric}_w{sub.width}_d{sub.depth}", s[metric])
        self.scores[split] = scores
        self.log(f"{prefix}/{metric}", sum(s[metric] for s in scores) / len(scores), prog_bar=True)

    def report(self, split: str = "test") -> dict:
        """One score per sub-network (``subnetworks``); the whole model's (the first) is ``full_depth``."""
        scores = self.scores.get(split, [])
        return {"layers": [], "subnetworks": scores, "full_depth": scores[0] if scores else None}
