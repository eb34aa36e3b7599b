"""Benchmark the early-exit engine: does wall-clock time follow the FLOPs saved, and is the full-depth path as
fast as plain Hugging Face?

For every backbone, batch size B and length T, one batch of random ids (every position real: [CLS], T-2
subwords in words of 1-2 subwords, [SEP]) runs through a ``MultiExitEncoder`` (9 labels) with these schedules:

- ``full``: ``NoExit`` through ``early_exit_forward``, the reference of both speed-ups;
- ``prescribed 50% @2`` and ``prescribed 75% @2``: that share of every sentence's words stops after layer 2;
- ``static @L/2``: every word stops at half depth;
- ``token_window (random heads)``: ``TokenWindowExit`` with a threshold bisected on a calibration batch for a
  2x FLOPs speed-up. The exit heads are random (untrained), so this shows how the engine copes with the
  scattered patterns of a real-valued rule, not what a trained tagger would do; real-model curves come from
  ``tokexit.evaluate`` on trained runs.

FLOPs speed-up = analytic FLOPs of the plain full model (last head only) / ``ExitOutput.flops``; wall speed-up =
best time of ``full`` / best time of the schedule, all timed interleaved after one warm-up call each; ratio =
wall / FLOPs speed-up. The full-depth path (``early_exit_forward`` with ``NoExit``, and ``encoder(...)``) is also
timed against ``AutoModelForTokenClassification`` holding the same weights (and ONNX Runtime when installed).

GEMM ceiling: the run's row counts replayed through the model's own linear layers alone (per layer: query,
attention output and feed-forward for the computed tokens, key and value for every token of the sentences with
work), timed the same way. Its speed-up (full replay / schedule replay) is what any implementation that hands the
active rows to this BLAS could reach, whatever its bookkeeping; on a CPU at batch 1 the weights stream from memory
for every layer, so few rows cost far more than their share of FLOPs. ``wall / ceiling`` tells how close the
engine gets to it.

The committed reports/benchmark_exit.{json,md} come from (the JSON records the command line that produced it):

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_exit.py --threads 2

Smoke test (about a minute on one core):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_exit.py --quick --threads 1 --out /tmp/bench_quick
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from onnx_tagger import INPUTS, export_tagger, ort_session  # scripts/onnx_tagger.py
from transformers import AutoModel, AutoModelForTokenClassification, BertConfig, PreTrainedModel

from tokexit.backbones import load_backbone
from tokexit.engine import ExitOutput, MultiExitEncoder, early_exit_forward
from tokexit.engine.flops import full_model_flops
from tokexit.engine.layer import project_qkv
from tokexit.engine.selector import TokenSelector, default_steps
from tokexit.exits import NoExit, StaticExit, TokenWindowExit
from tokexit.exits.base import ExitPolicy
from tokexit.exits.prescribed import PrescribedExit
from tokexit.fates import Drop, HaltAndCopy, TokenFate, TokenReduction
from tokexit.reporting.output import command_line, write_json

FATES = {"copy": HaltAndCopy, "drop": Drop}

NUM_LABELS = 9
CLS_ID, SEP_ID, FIRST_WORD_ID = 101, 102, 1000  # BERT-uncased vocabulary; MiniLM-L6 shares it
WALL_TARGETS = {32: 0.85, 1: 0.7}  # wall speed-up >= target * FLOPs speed-up, by batch size
HF_TARGET, HF_NOISE = 1.0, 0.03  # ours / HF tokens per second; within 3 % of the target counts as noise
CALIBRATION_SHAPE = (4, 128)  # (B, T) of the batch the token-window threshold is bisected on
DEFAULT_MAX_TOKENS = {"cpu": "bert-base-random=4096", "cuda": ""}


# ----------------------------------------------------------------------------------------------------- inputs


def load_model(name: str, seed: int) -> PreTrainedModel:
    """``bert-base-random``: ``BertConfig()`` defaults (12 layers, hidden 768), random init; else a tokexit
    backbone name or checkpoint directory (``minilm-l6``: the embedded pretrained MiniLM-L6)."""
    if name == "bert-base-random":
        torch.manual_seed(seed)
        return AutoModel.from_config(BertConfig())
    return load_backbone(name)


def make_batch(batch_size: int, length: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random ids, every position real: [CLS] + ``length - 2`` subwords in words of 1-2 subwords + [SEP]."""
    g = torch.Generator().manual_seed(seed)
    token_word = torch.full((batch_size, length), -1)
    word_positions = torch.full((batch_size, length - 2), -1)
    for b in range(batch_size):
        pos, j = 1, 0
        while pos < length - 1:
            pieces = min(int(torch.randint(1, 3, (1,), generator=g)), length - 1 - pos)
            word_positions[b, j], token_word[b, pos : pos + pieces] = pos, j
            pos, j = pos + pieces, j + 1
    input_ids = torch.randint(FIRST_WORD_ID, vocab_size, (batch_size, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = CLS_ID, SEP_ID
    num_words = int((word_positions >= 0).sum(1).max())
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "word_positions": word_positions[:, :num_words], "token_word": token_word}


def hf_tagger(backbone: PreTrainedModel, encoder: MultiExitEncoder) -> PreTrainedModel:
    """``AutoModelForTokenClassification`` with the backbone's weights and the last exit head as classifier."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = encoder.num_labels
    model = AutoModelForTokenClassification.from_config(config)
    missing, unexpected = model.base_model.load_state_dict(backbone.state_dict(), strict=False)
    if missing or any(not k.startswith("pooler.") for k in unexpected):  # the tagger has no pooler
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    model.classifier.load_state_dict(encoder.exits[-1].classifier.state_dict())
    return model.eval()


# ----------------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
                     ) -> tuple[dict[str, object], dict[str, float]]:
    """One warm-up call of each function (its result is returned), then ``repeats`` rounds calling each in turn
    (f1, f2, ..., f1, f2, ...). Returns the warm-up results and the best seconds of each."""
    results = {name: fn() for name, fn in fns.items()}
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return results, best


def exit_runner(encoder: MultiExitEncoder, policy: ExitPolicy, batch: dict[str, torch.Tensor],
                fate: TokenFate | None = None) -> Callable[[], ExitOutput]:
    keys = ("input_ids", "attention_mask", "word_positions", "token_word")
    return lambda: early_exit_forward(encoder, policy, *(batch[k] for k in keys), fate=fate)


def gemm_rows(computed: torch.Tensor, keys: torch.Tensor, attention_mask: torch.Tensor) -> tuple[int, int]:
    """Rows one layer hands to the BLAS, as the layer loop runs it, from the loop's record alone: (query/output/
    feed-forward rows, key/value rows) for the (B, T) tokens ``computed`` and visible as ``keys``.

    Sentences with nothing computed have left the batch for good, and the padding only they needed is trimmed. On
    what is left: every real token computed -> the dense layer on the padded block; keys = every real token
    (halt-and-copy) -> packed queries, keys and values for the padded block; keys = the computed tokens (drop) ->
    all packed; otherwise packed queries and packed keys."""
    real = attention_mask.bool()
    busy = computed.any(1)
    if not bool(busy.any()):
        return 0, 0
    width = real.shape[1] if bool(busy.all()) else int(real[busy].sum(1).max())  # trimmed once a sentence left
    block = int(busy.sum()) * width
    if torch.equal(computed[busy], real[busy]):
        return block, block
    if torch.equal(keys[busy], real[busy]):
        return int(computed.sum()), block
    return int(computed.sum()), int(keys.sum())


def gemm_replay(encoder: MultiExitEncoder, out: ExitOutput, attention_mask: torch.Tensor) -> Callable[[], None]:
    """The linear layers of a finished run alone, at its row counts, with the model's weights (the GEMM ceiling)."""
    steps = [(encoder.layer_parts(layer), *gemm_rows(computed, keys, attention_mask))
             for (layer, _), computed, keys in zip(encoder.plan, out.record.computed, out.record.keys, strict=False)]
    parts0 = steps[0][0]
    most, device = max(max(q, kv) for _, q, kv in steps), attention_mask.device
    x = torch.randn(most, parts0.query.in_features, device=device)  # (rows, hidden)
    a = torch.randn(most, parts0.attn_out.in_features, device=device)  # (rows, heads x head size)
    y = torch.randn(most, parts0.ffn_out.in_features, device=device)  # (rows, intermediate)

    def run() -> None:
        for parts, q, kv in steps:
            if q and q == kv:  # queries, keys and values of the same rows: the engine's one fused GEMM
                project_qkv(parts, x[:q])
            else:
                if q:
                    parts.query(x[:q])
                if kv:
                    parts.key(x[:kv]), parts.value(x[:kv])
            if q:
                parts.attn_out(a[:q]), parts.ffn_in(x[:q]), parts.ffn_out(y[:q])

    return run


def onnx_runner(model: PreTrainedModel, batch: dict[str, torch.Tensor], folder: str) -> Callable[[], object] | str:
    """ONNX Runtime on the exported HF tagger (specialised to the batch's shape), or why not (a string)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "not installed"
    try:
        path = export_tagger(model, batch, Path(folder) / "tagger.onnx")
        session = ort_session(path, torch.get_num_threads(), cuda=batch["input_ids"].is_cuda)
    except Exception as e:  # an exporter or runtime gap is a result to report, not a reason to stop
        return f"failed: {type(e).__name__}: {e}"[:300]
    feed = {k: batch[k].cpu().numpy() for k in INPUTS}
    return lambda: session.run(None, feed)


# ---------------------------------------------------------------------------------------------------- schedules


def schedules(num_layers: int, token_window_threshold: float, fates: list[str]
              ) -> dict[str, tuple[ExitPolicy, TokenFate | None]]:
    """Schedule name -> (policy, fate). Exit schedules run with every fate of ``fates`` (``copy``: halt-and-copy,
    stopped tokens stay keys; ``drop``: they leave the sequence); ``reduce`` adds TR-BERT token reduction with a
    random selector keeping half of the words at each selection point (its cost is the mechanics', whichever
    tokens it keeps)."""
    half = num_layers // 2
    policies = {
        "prescribed 50% @2": PrescribedExit(0.5, layer=2),
        "prescribed 75% @2": PrescribedExit(0.75, layer=2),
        f"static @{half}": StaticExit(half),
        "token_window (random heads)": TokenWindowExit(token_window_threshold, window=5),
    }
    out: dict[str, tuple[ExitPolicy, TokenFate | None]] = {"full": (NoExit(), None)}
    for fate in (f for f in fates if f != "reduce"):
        for name, policy in policies.items():
            out[name if fate == "copy" else f"{name} [{fate}]"] = (policy, FATES[fate]())
    if "reduce" in fates:
        out["reduce keep 50% @2,@4 [reduce]"] = (NoExit(), TokenReduction(keep_ratio=0.5))
    return out


def full_flops(encoder: MultiExitEncoder, batch: dict[str, torch.Tensor]) -> float:
    """Analytic FLOPs of the plain full model (one head, after the last layer) on ``batch``."""
    a = encoder.adapter
    words = (batch["word_positions"] >= 0).sum(1)
    return float(full_model_flops(batch["attention_mask"].sum(1), words, encoder.num_layers, a.hidden_size,
                                  a.layer(0).ffn_in.out_features, encoder.num_labels, heads="last").sum())


def calibrate_token_window(encoder: MultiExitEncoder, batch: dict[str, torch.Tensor], target: float,
                           iterations: int = 12) -> tuple[float, float]:
    """Smallest threshold in [0, 1] whose FLOPs speed-up on ``batch`` reaches ``target`` (bisection; the
    speed-up grows with the threshold). Returns the threshold and the speed-up it reaches."""
    reference, lo, hi = full_flops(encoder, batch), 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        speedup = reference / float(exit_runner(encoder, TokenWindowExit(mid, window=5), batch)().flops.sum())
        lo, hi = (lo, mid) if speedup >= target else (mid, hi)
    return hi, reference / float(exit_runner(encoder, TokenWindowExit(hi, window=5), batch)().flops.sum())


# ------------------------------------------------------------------------------------------------------ results


@dataclass
class ScheduleResult:
    schedule: str
    policy: dict
    flops_speedup: float
    wall_speedup: float
    ratio: float
    target: float | None  # wall speed-up >= target * FLOPs speed-up; None for the reference
    verdict: str  # ref | pass | FAIL
    ms_per_batch: float
    tokens_per_s: float
    avg_exit_layer: float
    gemm_ceiling: float  # wall speed-up of the linear layers alone at the run's row counts (see module docstring)
    wall_over_ceiling: float


@dataclass
class FullDepthResult:
    hf_tokens_per_s: float
    ours_tokens_per_s: float  # early_exit_forward with NoExit
    encoder_tokens_per_s: float  # MultiExitEncoder.forward: every exit's logits, dense layers
    ours_over_hf: float
    encoder_over_hf: float
    verdict: str  # of ours_over_hf: pass | pass (noise) | FAIL
    max_abs_logit_diff: float  # HF logits vs the encoder's last exit at the words, same weights
    hf_attn_implementation: str
    onnx_tokens_per_s: float | None
    onnxruntime: str


@dataclass
class Cell:
    backbone: str
    batch_size: int
    length: int
    words: int
    schedules: list[ScheduleResult] = field(default_factory=list)
    full_depth: FullDepthResult | None = None


def wall_target(batch_size: int) -> float:
    """0.85 from batch 32 up, 0.7 below (the batch-1 target also applies to the small batches in between)."""
    return WALL_TARGETS[32] if batch_size >= 32 else WALL_TARGETS[1]


def hf_verdict(ratio: float) -> str:
    return "pass" if ratio >= HF_TARGET else "pass (noise)" if ratio >= HF_TARGET - HF_NOISE else "FAIL"


@torch.inference_mode()
def run_cell(backbone_name: str, backbone: PreTrainedModel, encoder: MultiExitEncoder, hf: PreTrainedModel,
             policies: dict[str, ExitPolicy], batch_size: int, length: int, args: argparse.Namespace) -> Cell:
    """Every schedule and the full-depth comparison on one batch, timed interleaved."""
    device = torch.device(args.device)
    cpu_batch = make_batch(batch_size, length, backbone.config.vocab_size, args.seed + 1000 * batch_size + length)
    batch = {k: v.to(device) for k, v in cpu_batch.items()}
    fns: dict[str, Callable[[], object]] = {name: exit_runner(encoder, p, batch, f)
                                            for name, (p, f) in policies.items()}
    fns["encoder"] = lambda: encoder(batch["input_ids"], batch["attention_mask"], batch["word_positions"])
    fns["hf"] = lambda: hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    results, best = time_interleaved(fns, args.repeats, device)
    with tempfile.TemporaryDirectory() as folder:
        # timed on its own, after the torch runners: ONNX Runtime's thread pool would slow whatever runs next
        onnx = onnx_runner(hf, batch, folder) if args.onnx else "disabled (--no-onnx)"
        if callable(onnx):
            onnx_results, onnx_best = time_interleaved({"onnx": onnx}, args.repeats, device)
            results.update(onnx_results)
            best.update(onnx_best)

    replays = {name: gemm_replay(encoder, results[name], batch["attention_mask"]) for name in policies}
    _, gemm_best = time_interleaved(replays, args.repeats, device)

    tokens, words = batch_size * length, int((cpu_batch["word_positions"] >= 0).sum())
    reference = full_flops(encoder, batch)
    cell = Cell(backbone_name, batch_size, length, words)
    for name, (policy, fate) in policies.items():
        out = results[name]
        flops_speedup = reference / float(out.flops.sum())
        wall_speedup = best["full"] / best[name]
        ratio = wall_speedup / flops_speedup
        ceiling = gemm_best["full"] / gemm_best[name]
        target = None if name == "full" else wall_target(batch_size)
        verdict = "ref" if target is None else "pass" if ratio >= target else "FAIL"
        real = batch["word_positions"] >= 0
        cell.schedules.append(ScheduleResult(
            name, {**policy.describe(), **(fate or HaltAndCopy()).describe()},
            round(flops_speedup, 3), round(wall_speedup, 3), round(ratio, 3), target,
            verdict, round(1000 * best[name], 2), round(tokens / best[name], 1),
            round(float(out.exit_layers[real].float().mean()), 3), round(ceiling, 3),
            round(wall_speedup / ceiling, 3)))

    rows, cols = (batch["word_positions"] >= 0).nonzero(as_tuple=True)
    hf_logits = results["hf"][rows, batch["word_positions"][rows, cols]]
    ours = tokens / best["full"]
    cell.full_depth = FullDepthResult(
        hf_tokens_per_s=round(tokens / best["hf"], 1), ours_tokens_per_s=round(ours, 1),
        encoder_tokens_per_s=round(tokens / best["encoder"], 1), ours_over_hf=round(best["hf"] / best["full"], 3),
        encoder_over_hf=round(best["hf"] / best["encoder"], 3), verdict=hf_verdict(best["hf"] / best["full"]),
        max_abs_logit_diff=float((hf_logits - results["encoder"][-1]).abs().max()),
        hf_attn_implementation=str(hf.config._attn_implementation),
        onnx_tokens_per_s=round(tokens / best["onnx"], 1) if "onnx" in best else None,
        onnxruntime="timed" if callable(onnx) else onnx)
    return cell


# ------------------------------------------------------------------------------------------------------ reports


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: a hint of other work on the machine, not a control."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")] if cpuinfo.is_file() else []
        name = models[0] if models else platform.processor() or platform.machine()
    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": device.type, "device_name": name, "threads": torch.get_num_threads(),
            "os_cpu_count": os.cpu_count(), "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "load_average_start": load_average()}


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        "# Early-exit engine benchmark: wall clock vs FLOPs, full depth vs Hugging Face",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['device_name']} ({m['device']}), torch {m['torch']}, transformers {m['transformers']}, "
        f"{m['threads']} torch threads, os.cpu_count() {m['os_cpu_count']}, load average at start "
        f"{m['load_average_start']} and end {m['load_average_end']}; {report['elapsed_s']} s in all. "
        f"Repeats: {s['repeats']} (best of each, interleaved, after one warm-up call each). Whether other work "
        "shared the machine is not controlled: the numbers are ratios from one interleaved run.",
        "",
        f"Targets: wall speed-up >= {WALL_TARGETS[32]} x FLOPs speed-up at batch >= 32, >= {WALL_TARGETS[1]} x below "
        f"(batch 1); full depth (ours = `early_exit_forward` + `NoExit`) no slower than HF: ours/hf >= {HF_TARGET}, "
        f"'pass (noise)' within {HF_NOISE:.0%}.",
        "",
        "Token-window thresholds (random exit heads, bisected on a "
        f"{CALIBRATION_SHAPE[0]}x{CALIBRATION_SHAPE[1]} batch for a {s['token_window_speedup']}x FLOPs speed-up): "
        + ", ".join(f"{k} {v['threshold']:.4f} (reaches {v['flops_speedup']:.2f}x there)"
                    for k, v in report["token_window"].items()) + ".",
        "",
        "## Exit schedules",
        "",
        "GEMM ceiling: the wall speed-up of the run's linear layers alone at its row counts (the model's weights, "
        "no bookkeeping, no attention); wall / ceiling near 1 means the engine gets what this BLAS gives.",
        "",
        "| backbone | batch | length | schedule | FLOPs speed-up | wall speed-up | wall / FLOPs | target | "
        "GEMM ceiling | wall / ceiling | ms / batch | tokens / s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cells"]:
        for r in c["schedules"]:
            target = "-" if r["target"] is None else f">= {r['target']} {r['verdict']}"
            lines.append(f"| {c['backbone']} | {c['batch_size']} | {c['length']} | {r['schedule']} | "
                         f"{r['flops_speedup']:.2f} | {r['wall_speedup']:.2f} | {r['ratio']:.2f} | {target} | "
                         f"{r['gemm_ceiling']:.2f} | {r['wall_over_ceiling']:.2f} | "
                         f"{r['ms_per_batch']:.1f} | {r['tokens_per_s']:.0f} |")
    lines += [
        "",
        "## Full depth vs Hugging Face (tokens / s)",
        "",
        "| backbone | batch | length | HF | ours (early_exit_forward) | ours (encoder forward) | ONNX Runtime | "
        "ours / HF | encoder / HF | target | max logit diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cells"]:
        f = c["full_depth"]
        onnx = f"{f['onnx_tokens_per_s']:.0f}" if f["onnx_tokens_per_s"] is not None else f["onnxruntime"][:40]
        lines.append(f"| {c['backbone']} | {c['batch_size']} | {c['length']} | {f['hf_tokens_per_s']:.0f} | "
                     f"{f['ours_tokens_per_s']:.0f} | {f['encoder_tokens_per_s']:.0f} | {onnx} | "
                     f"{f['ours_over_hf']:.2f} | {f['encoder_over_hf']:.2f} | >= {HF_TARGET} {f['verdict']} | "
                     f"{f['max_abs_logit_diff']:.1e} |")
    if report["skipped"]:
        lines += ["", "Skipped (batch x length above --max-tokens): " + ", ".join(
            f"{k['backbone']} {k['batch_size']}x{k['length']}" for k in report["skipped"]) + "."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------- main


def parse_limits(spec: str) -> dict[str, int]:
    """``'bert-base-random=4096,minilm-l6=16384'`` (or a bare number for every backbone: key ``'*'``)."""
    limits = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.rpartition("=")
        limits[name or "*"] = int(value)
    return limits


def parse_args() -> argparse.Namespace:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="minilm-l6,bert-base-random")
    p.add_argument("--batch-sizes", type=ints, default=[1, 32])
    p.add_argument("--lengths", type=ints, default=[32, 64, 128, 256, 512])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-tokens", default=None,
                   help="skip cells with batch x length above this, per backbone: 'NAME=N,...' or N for all "
                        f"(default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--token-window-speedup", type=float, default=2.0, help="FLOPs speed-up the threshold targets")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip ONNX Runtime even if installed")
    p.add_argument("--fates", type=lambda s: s.split(","), default=["copy"],
                   help="token fates of the exit schedules: copy,drop,reduce (reduce: a random selector)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: minilm-l6, batch 1,4, lengths 32,64, 2 repeats")
    p.add_argument("--out", default="reports/benchmark_exit", help="writes OUT.json and OUT.md")
    args = p.parse_args()
    if args.quick:
        args.backbones, args.batch_sizes, args.lengths, args.repeats = "minilm-l6", [1, 4], [32, 64], 2
    if args.max_tokens is None:
        args.max_tokens = DEFAULT_MAX_TOKENS[args.device]
    return args


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    limits = parse_limits(args.max_tokens)
    report = {"command": command_line(), "machine": machine_info(device),
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "targets": {"wall_over_flops_by_batch": WALL_TARGETS, "ours_over_hf": HF_TARGET, "hf_noise": HF_NOISE},
              "note": "wall-clock numbers are ratios from one interleaved run (best of the repeats); whether other "
                      "work shared the machine is not controlled (see the load averages)",
              "token_window": {}, "cells": [], "skipped": []}
    started = time.perf_counter()
    for name in args.backbones.split(","):
        backbone = load_model(name, args.seed)
        torch.manual_seed(args.seed)
        encoder = MultiExitEncoder(backbone, NUM_LABELS).to(device).eval()
        hf = hf_tagger(backbone, encoder).to(device)
        calibration = {k: v.to(device) for k, v in
                       make_batch(*CALIBRATION_SHAPE, backbone.config.vocab_size, args.seed).items()}
        threshold, reached = calibrate_token_window(encoder, calibration, args.token_window_speedup)
        report["token_window"][name] = {"threshold": threshold, "flops_speedup": round(reached, 3),
                                        "calibration_batch": list(CALIBRATION_SHAPE)}
        policies = schedules(encoder.num_layers, threshold, args.fates)
        if "reduce" in args.fates:  # a random selector: the benchmark measures the mechanics, not the choice
            encoder.selector = TokenSelector(encoder.adapter.hidden_size, default_steps(encoder.num_layers),
                                             [CLS_ID, SEP_ID]).to(device).eval()
        limit = limits.get(name, limits.get("*", math.inf))
        for batch_size in args.batch_sizes:
            for length in args.lengths:
                if batch_size * length > limit:
                    report["skipped"].append({"backbone": name, "batch_size": batch_size, "length": length,
                                              "max_tokens": limit})
                    continue
                start = time.perf_counter()
                cell = run_cell(name, backbone, encoder, hf, policies, batch_size, length, args)
                report["cells"].append(asdict(cell))
                print(f"{name} B={batch_size} T={length}: " + ", ".join(
                    f"{r.schedule} {r.flops_speedup:.2f}/{r.wall_speedup:.2f}" for r in cell.schedules)
                    + f"; ours/hf {cell.full_depth.ours_over_hf:.2f} ({time.perf_counter() - start:.0f} s)",
                    flush=True)
    report["machine"]["load_average_end"] = load_average()
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    text = markdown(report)
    write_json(f"{args.out}.json", report)
    Path(f"{args.out}.md").write_text(text)
    print(text)
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
