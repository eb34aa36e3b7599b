"""Stage 2 of the token-level exit tagger: self-sampling fine-tuning.

Stage 1 trains every exit on the full model, but at inference a later layer sees halted (frozen) neighbours.
Here each training sentence draws an exit setting (a window w and a threshold t), the current model replays the
window rule on it without gradients, exactly as inference would (halt-and-copy included), and the model is then
trained on that exit pattern with gradients: h ← mᵢ ⊙ Layerᵢ(h) + (1 − mᵢ) ⊙ h. Words that stopped before layer
i are left out of layer i's loss. "Sandwich": a fraction of the sentences always gets the most aggressive
setting (smallest window, largest threshold) and another fraction no exit at all, so both ends stay trained.

Unlike the reference, which precomputes the exit patterns once from the stage-1 model with full-depth
predictions, the patterns are replayed on the fly from the model being trained, with frozen states: what
training sees is what inference does at that point of training (one extra forward pass without gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokexit.data.encoding import IGNORE
from tokexit.data.tagging import LabelSet
from tokexit.engine.early_exit import WordExits
from tokexit.engine.loop import run_layers
from tokexit.exits.token_window import TokenWindowExit
from tokexit.fates.copy import HaltAndCopy
from tokexit.lightning.tagging_module import MultiExitTaggerModule
from tokexit.model_io import load_exits


class SelfSamplingTaggerModule(MultiExitTaggerModule):
    """Fine-tunes a stage-1 tagger (``backbone`` = its tokexit model directory) on sampled exit patterns.

    ``windows``: inclusive range of odd window sizes; ``thresholds``: range of normalised-entropy thresholds
    (uniform); ``aggressive_fraction`` / ``full_fraction`` of every batch's sentences get the most aggressive
    setting / no exit; ``upper_factor`` multiplies the threshold in the upper half of the layers.
    """

    def __init__(
        self,
        labels: LabelSet,
        backbone: str,
        windows: tuple[int, int] = (3, 15),
        thresholds: tuple[float, float] = (0.01, 0.5),
        aggressive_fraction: float = 0.2,
        full_fraction: float = 0.4,
        upper_factor: float = 1.0,
        **kwargs,
    ):
        super().__init__(labels, backbone=backbone, **kwargs)
        self.hparams.update(windows=list(windows), thresholds=list(thresholds), aggressive_fraction=aggressive_fraction,
                            full_fraction=full_fraction, upper_factor=upper_factor)
        load_exits(self.encoder, labels, backbone)
        if not 0 <= aggressive_fraction + full_fraction <= 1:
            raise ValueError("aggressive_fraction + full_fraction must lie in [0, 1]")
        self.window_choices = torch.arange(windows[0] | 1, windows[1] + 1, 2)  # odd sizes
        self.threshold_range = (float(thresholds[0]), float(thresholds[1]))

    def sample_settings(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) window sizes and (B,) thresholds: sampled, with the sandwich's aggressive and no-exit rows."""
        windows = self.window_choices[torch.randint(len(self.window_choices), (batch_size,))]
        low, high = self.threshold_range
        thresholds = low + (high - low) * torch.rand(batch_size)
        order = torch.randperm(batch_size)
        n_aggressive = round(self.hparams.aggressive_fraction * batch_size)
        n_full = round(self.hparams.full_fraction * batch_size)
        aggressive, full = order[:n_aggressive], order[n_aggressive:n_aggressive + n_full]
        windows[aggressive], thresholds[aggressive] = int(self.window_choices[0]), high
        thresholds[full] = 0.0  # uncertainty is never below 0: nothing stops
        return windows, thresholds

    @torch.no_grad()
    def sample_masks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the window rule on a sampled setting per sentence exactly as inference runs it: the policy's own
        ``decide`` on the layer loop, in eval mode, with halt-and-copy.

        Returns (S, B, T) tokens computed in each step and (S, B, W) words still active entering each step.
        """
        encoder, num_steps = self.encoder, len(self.encoder.plan)
        ids, attention, positions = batch["input_ids"], batch["attention_mask"], batch["word_positions"]
        windows, thresholds = (x.to(ids.device) for x in self.sample_settings(len(ids)))
        policy = TokenWindowExit.per_sentence(thresholds, windows, self.hparams.upper_factor)
        exits = WordExits(encoder, policy, attention, positions, batch["token_word"])
        was_training = encoder.training
        encoder.eval()
        _, record = run_layers(encoder, ids, attention, exits, HaltAndCopy(), batch.get("token_type_ids"))
        encoder.train(was_training)
        ran = len(record.computed)  # steps after every word stopped compute nothing
        token_masks = record.computed + [torch.zeros_like(attention, dtype=torch.bool)] * (num_steps - ran)
        steps = torch.arange(num_steps, device=ids.device)[:, None, None]  # (S, 1, 1)
        word_masks = exits.exit_layers[None] > steps  # (S, B, W): a word stopping after step s is active up to s
        return torch.stack(token_masks), word_masks

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        token_masks, word_masks = self.sample_masks(batch)  # (L, B, T), (L, B, W)
        states = self.encoder.hidden_states(batch["input_ids"], batch["attention_mask"],
                                            batch.get("token_type_ids"), token_masks=token_masks)
        rows, cols = torch.nonzero(batch["word_positions"] >= 0, as_tuple=True)
        positions, gold = batch["word_positions"][rows, cols], batch["labels"][rows, cols]  # (N,)
        per_layer = []
        for i, hidden in enumerate(states):
            target = gold.masked_fill(~word_masks[i][rows, cols], IGNORE)  # halted words leave layer i's loss
            logits = self.encoder.exits[i](hidden[rows, positions])  # (N, C)
            count = (target != IGNORE).sum().clamp(min=1)
            per_layer.append(F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum") / count)
        loss = (self.loss_weights * torch.stack(per_layer)).sum()
        size = len(batch["input_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/active_fraction", word_masks[-1][batch["word_positions"] >= 0].float().mean(), batch_size=size)
        return loss
