"""TR-BERT token reduction: train a token selector on a fine-tuned (stage-1) tagger or classifier.

``backbone`` is the stage-1 tokexit model directory. A :class:`~tokexit.engine.selector.TokenSelector` is attached
to it (selection before layer 2 and the middle layer unless ``steps`` says otherwise), then

1. imitation warm-up (the first ``warmup_steps`` optimizer steps, only the policy learns): the gradient × input
   importance |h · ∂L/∂h| of every token at each selection point, from the stage-1 model (the model being trained
   is still exactly that), gives keep-sets (per sentence and point the ⌈r·n⌉ most important units, r drawn from
   ``imitation_keep``); the policy learns to predict them (binary cross-entropy);
2. joint training of backbone, heads and policy: every example gets ``rollouts`` (K) Bernoulli keep rollouts from
   the policy (:mod:`tokexit.lightning.rollouts`); the model runs densely on each rollout's removals (removed
   tokens are no keys: ``hidden_states(token_masks=..., fate=Drop())``), and learns from the task loss plus
   ``distill_weight`` × KL(frozen stage-1 model ‖ model) on the last exit's logits; the policy learns by REINFORCE
   with reward −loss − ``alpha`` · (share of removable tokens kept, averaged over the points) and the mean reward of
   the example's K rollouts as baseline. ``alpha`` sets the trade-off: larger, fewer tokens.

Validation and test score the model as inference runs it: the ``reduce`` fate, keep when p ≥ ``threshold``
(removed words labelled as ``label_removed`` says), so the best checkpoint is the best of what users get; the share
of tokens left before every selection layer and the FLOPs against the full model are logged.
"""

from __future__ import annotations

import copy

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from tokexit.data.classification import ClassificationTask
from tokexit.data.encoding import IGNORE
from tokexit.data.tagging import LabelSet
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.classify_exit import classification_flops, classify_early_exit, example_units
from tokexit.engine.early_exit import early_exit_forward
from tokexit.engine.encoder import MultiExitEncoder
from tokexit.engine.flops import full_model_flops
from tokexit.engine.selector import TokenSelector, default_steps
from tokexit.exits import NoExit
from tokexit.fates import Drop, TokenReduction
from tokexit.fates.reduce import LABEL_REMOVED
from tokexit.inference.collect import PredictionCollector, gather_tables, per_sentence, unique_examples
from tokexit.lightning.hooks import EvaluationHooks
from tokexit.lightning.rollouts import (
    ImportanceReduction,
    SampledReduction,
    imitation_loss,
    kept_ratios,
    log_probs,
    reinforce_loss,
    rollout,
    token_importance,
)
from tokexit.model_io import load_model
from tokexit.reporting.scores import classification_scores, main_metric, score_layers

INPUTS = ("input_ids", "attention_mask", "token_type_ids", "word_positions", "token_word", "labels", "targets")
SPECIAL_TOKENS = ("cls_token_id", "sep_token_id", "pad_token_id", "bos_token_id", "eos_token_id")


def load_stage1(directory: str, labels: ClassificationTask | LabelSet) -> tuple[MultiExitEncoder, object]:
    """The stage-1 tagger or classifier in ``directory`` (whichever it is) and its tokenizer; its labels and task
    must be the data's."""
    model, tokenizer, task, _ = load_model(directory)
    saved = task.labels
    if saved.labels != labels.labels or saved.task != labels.task:
        raise ValueError(f"{directory}: a {saved.task} model with labels {saved.labels}, but the data is a "
                         f"{labels.task} task with labels {labels.labels}")
    return model.train(), tokenizer


def special_ids(tokenizer) -> list[int]:
    """The ids of the tokens that always stay: [CLS], [SEP], padding, <s>, </s> (not [UNK]: a word like any)."""
    return sorted({i for i in (getattr(tokenizer, name, None) for name in SPECIAL_TOKENS) if i is not None})


class TokenReductionModule(EvaluationHooks, L.LightningModule):
    scored_per = "run with fate=reduce"

    def __init__(
        self,
        labels: ClassificationTask | LabelSet,
        backbone: str,
        steps: list[int] | None = None,
        rollouts: int = 8,
        alpha: float = 0.5,
        warmup_steps: int = 200,
        imitation_keep: tuple[float, float] = (0.3, 1.0),
        distill_weight: float = 1.0,
        label_removed: str = "last_head",
        threshold: float = 0.5,
        backbone_lr: float = 2e-5,
        head_lr: float = 2e-5,
        policy_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        name: str = "token-reduction",
    ):
        super().__init__()
        if rollouts < 2:
            raise ValueError("model.rollouts must be >= 2 (the baseline is the mean reward of an example's rollouts)")
        if label_removed not in LABEL_REMOVED:
            raise ValueError(f"model.label_removed must be one of {LABEL_REMOVED}, not '{label_removed}'")
        self.save_hyperparameters(ignore=["labels"])
        self.labels = labels
        self.regression = getattr(labels, "regression", False)
        self.encoder, tokenizer = load_stage1(backbone, labels)
        self.classifier = isinstance(self.encoder, MultiExitClassifier)
        self.teacher = copy.deepcopy(self.encoder).requires_grad_(False).eval()  # the frozen stage-1 model
        self.teacher.selector = None
        if self.encoder.selector is None:
            chosen = list(steps) if steps is not None else default_steps(len(self.encoder.plan))
            self.encoder.selector = TokenSelector(self.encoder.adapter.hidden_size, chosen, special_ids(tokenizer))
        elif steps is not None and list(steps) != list(self.encoder.selector.steps):
            raise ValueError(f"{backbone} already has a selector at steps {list(self.encoder.selector.steps)}, "
                             f"not model.steps={list(steps)}")
        self.steps = [s for s in self.encoder.selector.steps if s < len(self.encoder.plan)]
        #: what metrics.json and the model's metadata say about the reduction
        self.reduction = {"steps": list(self.encoder.selector.steps), "alpha": alpha, "rollouts": rollouts,
                          "threshold": threshold, "label_removed": label_removed, "stage1": str(backbone)}
        self.model_meta = {"token_reduction": self.reduction}
        self.collector = PredictionCollector()
        self.parts: list[torch.Tensor] = []
        self.tally: dict[str, torch.Tensor] = {}
        self.scores: dict[str, list[dict]] = {}

    # the model's outputs on a batch
    def units(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) units of removal: a tagger's words, a classifier's tokens."""
        return example_units(batch["attention_mask"]) if self.classifier else batch["token_word"]

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) class ids or values; (N,) word labels of a tagging batch."""
        return batch["targets"] if self.classifier else batch["labels"][batch["word_positions"] >= 0]

    def outputs(self, model: MultiExitEncoder, states: list[torch.Tensor], batch: dict[str, torch.Tensor],
                masks: torch.Tensor | None = None) -> torch.Tensor:
        """The last exit's outputs from the states of every step, for a run whose (S, B, T) tokens computed are
        ``masks`` (None: every token at every step). A classifier: (B, C), pooling the tokens left at the last
        step. A tagger: (N, C) for its words, each by the head inference labels it with (``label_removed``); a word
        that left at step s has its state of step s − 1 in the last states (dense ``Drop``)."""
        last = model.plan[-1][1]
        if self.classifier:
            kept = batch["attention_mask"].bool() if masks is None else masks[-1]
            return model.exits[last](model.pooler(states[-1], kept))
        rows, cols = torch.nonzero(batch["word_positions"] >= 0, as_tuple=True)
        positions = batch["word_positions"][rows, cols]  # (N,)
        hidden = states[-1][rows, positions]  # (N, H)
        if self.hparams.label_removed == "last_head" or masks is None:
            return model.exits[last](hidden)
        went = masks[:, rows, positions].sum(0)  # (N,) steps each word went through
        heads = torch.tensor([e for _, e in model.plan], device=went.device)[went - 1]  # (N,) its labelling head
        logits = hidden.new_empty(len(hidden), model.num_labels)
        for head in heads.unique().tolist():
            chosen = heads == head
            logits[chosen] = model.exits[head](hidden[chosen])
        return logits

    def losses(self, logits: torch.Tensor, gold: torch.Tensor, batch: dict[str, torch.Tensor]):
        """-> (task loss, (B,) loss of each row: the reward's)."""
        if self.regression:
            per = (logits[:, 0] - gold.float()) ** 2
            return per.mean(), per
        per = F.cross_entropy(logits, gold, ignore_index=IGNORE, reduction="none")  # (B,) or (N,)
        if self.classifier:
            return per.mean(), per
        counted = (gold != IGNORE).float()
        rows = torch.nonzero(batch["word_positions"] >= 0, as_tuple=True)[0]
        b = len(batch["input_ids"])
        row_loss = torch.zeros(b, device=per.device).index_add(0, rows, per)
        row_count = torch.zeros(b, device=per.device).index_add(0, rows, counted)
        return per.sum() / counted.sum().clamp(min=1), row_loss / row_count.clamp(min=1)

    def distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(student, teacher)
        return F.kl_div(torch.log_softmax(student, -1), torch.softmax(teacher, -1), reduction="batchmean")

    # training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.teacher.eval()
        batch = {k: v for k, v in batch.items() if k in INPUTS}
        if self.global_step < self.hparams.warmup_steps:
            return self.imitation_step(batch)
        return self.joint_step(batch)

    def imitation_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.enable_grad():  # only towards the states: no weight gets a gradient here
            states = self.encoder.hidden_states(batch["input_ids"], batch["attention_mask"],
                                                batch.get("token_type_ids"))
            task, _ = self.losses(self.outputs(self.encoder, states, batch), self.targets(batch), batch)
            importance = token_importance(states, task, tuple(self.steps))
        self.encoder.train(was_training)
        low, high = self.hparams.imitation_keep
        ratios = low + (high - low) * torch.rand(len(self.steps), len(batch["input_ids"]), device=self.device)
        run = rollout(self.encoder, batch, self.units(batch), ImportanceReduction(importance, ratios))
        loss = imitation_loss(self.encoder.selector, run.decisions)
        size = len(batch["input_ids"])
        self.log("train/imitation_loss", loss, prog_bar=True, batch_size=size)
        self._log_kept(run, size)
        return loss

    def joint_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        k, size = self.hparams.rollouts, len(batch["input_ids"])
        with torch.no_grad():
            teacher_states = self.teacher.hidden_states(batch["input_ids"], batch["attention_mask"],
                                                        batch.get("token_type_ids"))
            teacher = self.outputs(self.teacher, teacher_states, batch)  # (B, C) or (N, C)
        many = {key: v.repeat_interleave(k, 0) for key, v in batch.items()}  # K consecutive rows per example
        teacher = self._repeat_outputs(teacher, batch, many, k)
        run = rollout(self.encoder, many, self.units(many), SampledReduction())
        states = self.encoder.hidden_states(many["input_ids"], many["attention_mask"], many.get("token_type_ids"),
                                            token_masks=run.masks, fate=Drop())
        logits = self.outputs(self.encoder, states, many, run.masks)
        task, row_loss = self.losses(logits, self.targets(many), many)
        distill = self.distillation(logits, teacher)
        kept = kept_ratios(run.masks, run.removable, tuple(self.steps))  # (P, B*K)
        reward = -row_loss.detach() - self.hparams.alpha * kept.mean(0)
        policy = reinforce_loss(log_probs(self.encoder.selector, run.decisions, len(reward)), reward, k)
        loss = task + self.hparams.distill_weight * distill + policy
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/task_loss", task, batch_size=size)
        self.log("train/distillation", distill, batch_size=size)
        self.log("train/policy_loss", policy, batch_size=size)
        self.log("train/reward", reward.mean(), batch_size=size)
        self._log_kept(run, size)
        return loss

    def _repeat_outputs(self, teacher: torch.Tensor, batch: dict, many: dict, k: int) -> torch.Tensor:
        """The teacher's (B, C) or (N, C) outputs on ``batch`` -> those of its K-fold repetition ``many``."""
        if self.classifier:
            return teacher.repeat_interleave(k, 0)
        words = batch["word_positions"] >= 0
        table = teacher.new_zeros(*words.shape, teacher.shape[-1])  # (B, W, C)
        table[words] = teacher
        rows, cols = torch.nonzero(many["word_positions"] >= 0, as_tuple=True)
        return table[rows // k, cols]

    def _log_kept(self, run, size: int) -> None:
        for (step, kept) in zip(self.steps, kept_ratios(run.masks, run.removable, tuple(self.steps)), strict=True):
            self.log(f"train/kept_before_layer{step + 1}", kept.mean(), batch_size=size)

    def configure_optimizers(self):
        """AdamW: the backbone at ``backbone_lr`` (no decay on biases and norms), exits and pooler at ``head_lr``,
        with linear warm-up then decay over the run's steps; the policy at a constant ``policy_lr`` (its imitation
        warm-up comes first, while the others' learning rates are still warming up)."""
        hp = self.hparams
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        groups = {"decay": (hp.backbone_lr, hp.weight_decay), "no_decay": (hp.backbone_lr, 0.0),
                  "heads": (hp.head_lr, 0.0), "policy": (hp.policy_lr, 0.0)}
        params: dict[str, list] = {g: [] for g in groups}
        for name, p in self.encoder.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("selector."):
                params["policy"].append(p)
            elif name.startswith(("exits.", "pooler.")):
                params["heads"].append(p)
            else:
                params["no_decay" if name.endswith(no_decay) else "decay"].append(p)
        used = [g for g in groups if params[g]]
        optimizer = torch.optim.AdamW([{"params": params[g], "lr": groups[g][0], "weight_decay": groups[g][1]}
                                       for g in used], fused=True)
        total = self.trainer.estimated_stepping_batches
        warmup = int(hp.warmup_ratio * total)

        def linear(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = LambdaLR(optimizer, [(lambda _: 1.0) if g == "policy" else linear for g in used])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # evaluation: the model as inference runs it
    def inference_fate(self) -> TokenReduction:
        return TokenReduction(threshold=self.hparams.threshold, label_removed=self.hparams.label_removed)

    def _eval_step(self, batch: dict[str, torch.Tensor]) -> None:
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        shape, steps = self.encoder.cost_shape(), len(self.encoder.plan)
        tokens = mask.sum(1)
        if self.classifier:
            out = classify_early_exit(self.encoder, NoExit(), ids, mask, types, fate=self.inference_fate())
            pred = out.logits[:, 0] if self.regression else out.logits.argmax(-1).float()
            self.parts.append(torch.stack([batch["index"].float(), batch["targets"].float(), pred], 1).cpu())
            full = classification_flops(tokens, torch.full_like(tokens, steps), torch.ones_like(tokens), shape)
        else:
            words = batch["word_positions"] >= 0
            out = early_exit_forward(self.encoder, NoExit(), ids, mask, batch["word_positions"], batch["token_word"],
                                     types, fate=self.inference_fate())
            self.collector.add(batch, out.predictions[words][None])  # (1, N)
            full = full_model_flops(tokens, words.sum(1), steps, shape["hidden"], shape["intermediate"],
                                    shape["num_labels"], heads="last", attention=shape["attention"])
        left = [out.record.computed[s].sum() if s < len(out.record.computed) else tokens.new_zeros(())
                for s in self.steps]
        for key, value in {"flops": out.flops.sum(), "full_flops": full.sum(), "tokens": tokens.sum(),
                           **{f"left{s}": n for s, n in zip(self.steps, left, strict=True)}}.items():
            self.tally[key] = self.tally.get(key, 0) + value.double()

    def _eval_end(self, split: str) -> None:
        tally = {k: float(self.trainer.strategy.reduce(v, reduce_op="sum")) for k, v in self.tally.items()}
        self.tally = {}
        if self.classifier:
            table = gather_tables(torch.cat(self.parts) if self.parts else torch.zeros((0, 0)))
            self.parts = []
            if not table.numel():
                return
            rows = unique_examples(table)
            cast = (lambda x: x.tolist()) if self.regression else (lambda x: x.long().tolist())
            score, metric = classification_scores(cast(rows[:, 1]), cast(rows[:, 2]), self.labels), self.labels.metric
        else:
            table = gather_tables(self.collector.table())
            self.collector.reset()
            corpus = self.trainer.datamodule.corpus(split)
            score = score_layers(corpus, self.labels.labels, self.labels.task, per_sentence(table, corpus))[0]
            metric = main_metric(self.labels.task)
        score["flops_fraction"] = tally["flops"] / max(tally["full_flops"], 1.0)
        for s in self.steps:
            score[f"kept_before_layer{s + 1}"] = tally[f"left{s}"] / max(tally["tokens"], 1.0)
        self.scores[split] = [score]
        prefix = "val" if split == "validation" else split
        for key, value in score.items():
            self.log(f"{prefix}/{key}", value, prog_bar=key == metric, sync_dist=False)

    def report(self, split: str = "test") -> dict:
        """One score, the model as inference runs it (``fate=reduce``), and the reduction's settings."""
        scores = self.scores.get(split, [])
        return {"layers": [], "subnetworks": None, "full_depth": scores[0] if scores else None,
                "reduction": self.reduction}
