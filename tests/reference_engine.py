"""A frozen copy of the engine before the one-layer-loop redesign (halt-and-copy written inline in each loop).

The `copy` fate must reproduce it bit for bit (tests/test_fates.py); nothing in tokexit imports this module."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokexit.backbones.base import LayerParts
from tokexit.engine.flops import head_flops, layer_flops
from tokexit.engine.layer import encoder_layer, key_mask
from tokexit.exits.base import ExitPolicy


# ---- tokexit/engine/halting.py as of 9c335f3
def gather_active(hidden: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, H), (B, T) bool -> packed (N, H) states of the active tokens and their (N,) row and column."""
    rows, cols = active.nonzero(as_tuple=True)
    return hidden[rows, cols], rows, cols


def scatter_active(hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Write packed (N, H) states back into (B, T, H) ``hidden`` at (rows, cols), in place."""
    return hidden.index_put_((rows, cols), packed)


def halted_layer(
    parts: LayerParts, hidden: torch.Tensor, attention_mask: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """One layer with halt-and-copy, in place on ``hidden`` (B, T, H).

    ``attention_mask`` (B, T) marks real tokens (keys), ``active`` (B, T) the tokens to update (a subset).
    Sentences without active tokens are skipped entirely. With every real token active this is the dense layer.
    """
    if bool((active == attention_mask.bool()).all()):
        return encoder_layer(parts, hidden, attention_mask.bool()[:, None, None, :])
    busy = active.any(1).nonzero().squeeze(1)  # (B',) sentences with work
    if busy.numel() == 0:
        return hidden
    if len(busy) == len(hidden):  # every sentence busy: slices, no copies
        busy_mask, busy_active, busy_hidden = attention_mask, active, hidden
    else:
        busy_mask, busy_active, busy_hidden = attention_mask[busy], active[busy], hidden[busy]
    t = int(busy_mask.sum(1).max())  # keys beyond the longest busy sentence are all padding
    states = busy_hidden[:, :t]  # (B', T', H)
    keys = busy_mask[:, :t].bool()[:, None, None, :]  # (B', 1, 1, T')
    act = busy_active[:, :t]  # (B', T')
    x, r, c = gather_active(states, act)  # (N, H)
    slot = (act.cumsum(1) - 1)[r, c]  # position of each active token among its sentence's active tokens
    b, n, d = len(busy), parts.num_heads, parts.head_dim
    q_max = int(act.sum(1).max())

    q = x.new_zeros(b, q_max, n * d)  # (B', Q, H) padded queries
    q[r, slot] = parts.query(x)
    k = parts.key(states).view(b, t, n, d).transpose(1, 2)  # (B', n, T', d)
    v = parts.value(states).view(b, t, n, d).transpose(1, 2)
    context = F.scaled_dot_product_attention(q.view(b, q_max, n, d).transpose(1, 2), k, v, attn_mask=keys)
    context = context.transpose(1, 2).reshape(b, q_max, n * d)[r, slot]  # (N, H) back to packed
    x = parts.attn_norm(parts.attn_out(context) + x)
    x = parts.ffn_norm(parts.ffn_out(parts.act(parts.ffn_in(x))) + x)
    return scatter_active(hidden, busy[r], c, x)


# ---- tokexit/engine/early_exit.py as of 9c335f3
@dataclass
class ExitOutput:
    predictions: torch.Tensor  # (B, W) label id of each word at its exit layer (0 for padding)
    exit_layers: torch.Tensor  # (B, W) 1-based exit layer of each word (0 for padding)
    token_active: list[torch.Tensor]  # per layer run, the (B, T) tokens that were computed
    hidden: torch.Tensor  # (B, T, H) final states (each token's state at its exit)
    word_counts: list[torch.Tensor | None]  # per layer run, (B,) words its exit head classified (None: skipped)
    shape: dict[str, int]  # "MultiExitEncoder".cost_shape(): hidden, attention, intermediate, steps, num_labels

    @property
    def flops(self) -> torch.Tensor:
        """(B,) analytic FLOPs spent on each sentence (bookkeeping, computed on demand, not during the run)."""
        tokens = self.token_active[0].sum(1)  # the first layer always computes every real token
        s = self.shape
        return run_flops(self.token_active, self.word_counts, tokens, s["hidden"], s["intermediate"],
                         s["num_labels"], s["attention"])


def token_activity(word_active: torch.Tensor, token_word: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, W) active words -> (B, T) active tokens: a word's subwords, plus the special tokens of every
    sentence that still has an active word. ``token_word`` (B, T) is each subword's word, -1 for the rest."""
    words_of_tokens = word_active.gather(1, token_word.clamp(min=0))  # (B, T)
    special = (token_word < 0) & attention_mask.bool() & word_active.any(1, keepdim=True)
    return torch.where(token_word >= 0, words_of_tokens, special)


def run_flops(history: list[torch.Tensor], word_counts: list[torch.Tensor | None], tokens: torch.Tensor,
              hidden: int, intermediate: int, num_labels: int, attention: int | None = None) -> torch.Tensor:
    """(B,) analytic FLOPs of a run, from the tokens computed in each layer and the words each exit head saw."""
    flops = torch.zeros(len(tokens), dtype=torch.float64, device=tokens.device)
    for token_active, words in zip(history, word_counts, strict=True):
        flops += layer_flops(tokens, token_active.sum(1), hidden, intermediate, attention)
        if words is not None:
            flops += head_flops(words, hidden, num_labels)
    return flops


@torch.inference_mode()
def early_exit_forward(
    encoder,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    word_positions: torch.Tensor,
    token_word: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> ExitOutput:
    """Run ``encoder`` with ``policy``. Shapes: ids/mask/token_word (B, T), word_positions (B, W) (-1 padding)."""
    adapter, plan = encoder.adapter, encoder.plan
    num_steps = len(plan)
    words = word_positions >= 0  # (B, W)
    active = words.clone()
    uncertainty = torch.zeros(words.shape, device=words.device)  # latest per word, frozen once it stops
    predictions = torch.zeros(words.shape, dtype=torch.long, device=words.device)
    exit_layers = torch.zeros_like(predictions)
    history, word_counts, all_active = [], [], True

    hidden = adapter.embed(input_ids, token_type_ids)  # (B, T, H)
    for i, (layer, exit_index) in enumerate(plan):
        parts = encoder.layer_parts(layer)
        if all_active:  # nothing stopped yet: the dense layer, no bookkeeping
            token_active = attention_mask.bool()
            hidden = encoder_layer(parts, hidden, token_active[:, None, None, :])
        else:
            token_active = token_activity(active, token_word, attention_mask)  # (B, T)
            hidden = halted_layer(parts, hidden, attention_mask, token_active)
        history.append(token_active)
        last = i == num_steps - 1
        if not (last or policy.can_stop(i, num_steps)):
            word_counts.append(None)
            continue
        word_counts.append(active.sum(1))
        rows, cols = active.nonzero(as_tuple=True)  # active words, packed
        logits = encoder.exits[exit_index](hidden[rows, word_positions[rows, cols]])  # (N, C)
        predictions[rows, cols] = logits.argmax(-1)
        uncertainty[rows, cols] = policy.uncertainty(logits)
        stop = active if last else policy.decide(i, num_steps, uncertainty, active, words) & active
        exit_layers[stop] = i + 1
        active &= ~stop
        all_active = all_active and not bool(stop.any())
        if not bool(active.any()):
            break
    return ExitOutput(predictions, exit_layers, history, hidden, word_counts, encoder.cost_shape())


# ---- tokexit/engine/classify_exit.py as of 9c335f3
def classification_flops(tokens: torch.Tensor, layers_run: torch.Tensor, heads_run: torch.Tensor,
                         shape: dict[str, int]) -> torch.Tensor:
    """(B,) analytic FLOPs: ``layers_run`` dense layers over ``tokens`` real tokens and ``heads_run`` exits
    (shared pooler + classifier) per example."""
    h = shape["hidden"]
    per_layer = layer_flops(tokens, tokens, h, shape["intermediate"], shape["attention"])
    per_head = 2.0 * h * h + 2.0 * h * shape["num_labels"]
    return layers_run.double() * per_layer + heads_run.double() * per_head


@dataclass
class ClassifyExitOutput:
    logits: torch.Tensor  # (B, C) each example's logits at its exit
    exit_layers: torch.Tensor  # (B,) 1-based step at which each example stopped
    heads_run: torch.Tensor  # (B,) exit heads evaluated for each example
    tokens: torch.Tensor  # (B,) real tokens of each example
    shape: dict[str, int]  # "MultiExitEncoder".cost_shape()

    @property
    def flops(self) -> torch.Tensor:
        return classification_flops(self.tokens, self.exit_layers, self.heads_run, self.shape)


@torch.inference_mode()
def classify_early_exit(
    model,
    policy: ExitPolicy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> ClassifyExitOutput:
    """Run ``model`` with ``policy`` on a (B, T) batch."""
    plan, shape = model.plan, model.cost_shape()
    b, device = len(input_ids), input_ids.device
    logits_out = torch.zeros(b, shape["num_labels"], device=device)
    exit_layers = torch.zeros(b, dtype=torch.long, device=device)
    heads_run = torch.zeros_like(exit_layers)
    tokens = attention_mask.sum(1)
    rows = torch.arange(b, device=device)  # original index of every example still running
    state = policy.start_examples(b, device)
    mask = attention_mask
    hidden = model.adapter.embed(input_ids, token_type_ids)  # (B, T, H)
    for step, (layer, exit_index) in enumerate(plan):
        hidden = encoder_layer(model.layer_parts(layer), hidden, key_mask(mask))  # (b, t, H)
        last = step == len(plan) - 1
        if not (last or policy.can_stop(step, len(plan))):
            continue
        logits = model.exits[exit_index](model.pooler(hidden, mask)).float()  # (b, C)
        heads_run[rows] += 1
        stop = torch.ones(len(rows), dtype=torch.bool, device=device) if last else \
            policy.decide_examples(step, len(plan), logits, state)
        logits_out[rows[stop]] = logits[stop]
        exit_layers[rows[stop]] = step + 1
        if bool(stop.all()):
            break
        if bool(stop.any()):  # finished examples leave the batch
            keep = ~stop
            rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
            state = {k: v[keep] for k, v in state.items()}
            t = int(mask.any(0).nonzero().max()) + 1  # trailing columns that are padding for every row left
            hidden, mask = hidden[:, :t], mask[:, :t]
    return ClassifyExitOutput(logits_out, exit_layers, heads_run, tokens, shape)
