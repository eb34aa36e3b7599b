"""``python -m tokexit.evaluate`` for a sentence(-pair) classifier (called by :mod:`tokexit.evaluate` when the
model directory holds one): ``model_dir=DIR data.test_file=PATH output_dir=OUT batch_size=N [exit=patience
exit.patience=K | exit=entropy exit.threshold=T | exit.target_speedup=X] [subnetwork.width=W subnetwork.depth=D]``.

Writes ``OUT/metrics.json`` (every exit's scores with the full model; with a policy its score, ``flops_speedup``,
``wall_speedup``, ``avg_exit_layer``, exit histogram) and ``OUT/predictions.tsv`` (one line per example in input
order: predicted label or value, exit layer).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tokexit.classify import ClassifyRun, run_examples
from tokexit.data.classification import ClassificationTask, encode_examples, sorted_example_loader
from tokexit.data.glue import TsvColumns, read_tsv
from tokexit.engine.subnetwork import SubNetwork
from tokexit.evaluation import classification_scores
from tokexit.exits.none import NoExit
from tokexit.model_io import load_classifier, resolve_device
from tokexit.reporting import command_line, layer_table, write_json

log = logging.getLogger("tokexit.evaluate")
COLUMN_KEYS = ("text_a", "text_b", "label", "header")


def columns_for(cfg: DictConfig, task: ClassificationTask) -> TsvColumns:
    """The TSV layout: from a classification data config when one is given, else the one the model was trained on."""
    if "text_a" in cfg.data:
        return TsvColumns(**{k: cfg.data.get(k) for k in COLUMN_KEYS})
    if not task.columns:
        raise ValueError("the model does not record its TSV layout: give data=sst2|mrpc|rte|stsb|cola or data.text_a=…")
    return TsvColumns(**task.columns)


def format_prediction(value: float, task: ClassificationTask) -> str:
    return f"{value:.4f}" if task.regression else task.labels[int(value)]


def evaluate_classifier(cfg: DictConfig) -> dict:
    from tokexit.evaluate import UsageError, build_policy, calibrated_policy, exit_summary, require_settings

    require_settings(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model, tokenizer, task, meta = load_classifier(cfg.model_dir)
    model.use_subnetwork(SubNetwork(cfg.subnetwork.width, cfg.subnetwork.depth))
    columns = columns_for(cfg, task)
    max_length = meta.get("max_length", 512)

    def load(path: str):
        examples = read_tsv(path, columns, regression=task.regression)
        labelled = bool(examples) and examples[0].label is not None
        rows = encode_examples(examples, tokenizer, task if labelled else None, max_length, path)
        loader = sorted_example_loader(rows, cfg.batch_size, tokenizer.pad_token_id)
        gold = [r["target"] for r in rows] if labelled else None
        return examples, loader, gold

    def scores(gold, predictions: torch.Tensor) -> dict:
        return classification_scores(gold, predictions.tolist() if task.regression else predictions.long().tolist(),
                                     task)

    exit_cfg = OmegaConf.to_container(cfg.exit, resolve=True)
    target = exit_cfg.pop("target_speedup", None)
    policy = build_policy(exit_cfg)
    policy.check_depth(len(model.plan))  # before any run: a static layer beyond the model, ...
    if target is not None and "threshold" not in exit_cfg:
        raise UsageError(f"exit.target_speedup needs a policy with a threshold, not '{policy.name}'")
    test_file = str(cfg.data.test_file)
    examples, loader, gold = load(test_file)
    result = {"command": command_line(), "model_dir": str(cfg.model_dir), "test_file": test_file, "task": task.task,
              "metric": task.metric, "counts": {"examples": len(examples)}, "labelled": gold is not None,
              "device": device, "batch_size": cfg.batch_size,
              "subnetwork": {"width": cfg.subnetwork.width, "depth": cfg.subnetwork.depth},
              "parameters_run": subnetwork_parameters(model)}
    if not examples:
        (out / "predictions.tsv").write_text("")
        write_json(out / "metrics.json", {**result, "layers": [], "full_depth": None})
        log.warning("%s holds no examples: nothing to classify or score", test_file)
        print(f"{test_file}: no examples in the file, nothing to classify or score; wrote {out / 'metrics.json'}")
        return {**result, "layers": [], "full_depth": None}

    full = run_examples(model, loader, task.regression, None, device)
    layer_scores = [scores(gold, p) for p in full.layer_predictions] if gold is not None else []
    result.update({"layers": [{"layer": i, **s} for i, s in enumerate(layer_scores, start=1)],
                   "full_depth": layer_scores[-1] if layer_scores else None,
                   "forward_seconds": round(full.seconds, 4),
                   "examples_per_second": round(len(examples) / full.seconds, 1) if full.seconds else None,
                   "full_flops_per_example": full.full_flops / len(examples)})
    run: ClassifyRun = full
    if not isinstance(policy, NoExit):
        if target is not None:
            validation_file = str(cfg.data.validation_file)
            val_examples, val_loader, _ = load(validation_file)
            if not val_examples:
                raise UsageError(f"data.validation_file {validation_file} holds no examples: "
                                 "exit.target_speedup cannot be calibrated on it")
            upper = 1.0 if exit_cfg.get("normalised", True) else float(torch.log(torch.tensor(task.num_outputs)))
            policy, result["calibration"] = calibrated_policy(
                exit_cfg, target, lambda p: run_examples(model, val_loader, task.regression, p, device),
                validation_file, upper=upper)
        run = run_examples(model, loader, task.regression, policy, device)
        for _ in range(cfg.timing_repeats - 1):  # interleaved repeats, best of each
            full.seconds = min(full.seconds, run_examples(model, loader, task.regression, NoExit(), device).seconds)
            run.seconds = min(run.seconds, run_examples(model, loader, task.regression, policy, device).seconds)
        result["timing_repeats"] = cfg.timing_repeats
    result["exit"] = policy.describe()
    result.update(exit_summary(run, full, len(model.plan), run.exit_layers))
    result["score"] = scores(gold, run.predictions) if gold is not None else None
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        for value, layer in zip(run.predictions.tolist(), run.exit_layers.tolist(), strict=True):
            f.write(f"{format_prediction(value, task)}\t{layer}\n")
    write_json(out / "metrics.json", result)
    if layer_scores:
        print(layer_table(layer_scores, task.metric, f"{test_file}: {task.metric} per exit layer (full model)"))
    else:
        print(f"{test_file} has no labels: its examples are classified (predictions.tsv), not scored")
    if not isinstance(policy, NoExit):
        scored = f"{task.metric} {result['score'][task.metric]:.2f} | " if gold is not None else "not scored | "
        print(f"{policy.describe()}: {scored}FLOPs speed-up {result['flops_speedup']:.2f}x | wall-clock speed-up "
              f"{result['wall_speedup']:.2f}x | average exit layer {result['avg_exit_layer']:.2f}")
    print(f"{len(examples)} examples; wrote {out / 'metrics.json'}")
    return result


def subnetwork_parameters(model) -> int:
    """Parameters the configured sub-network actually uses: embeddings, the kept slices of the kept layers,
    the pooler and one exit head."""
    backbone = model.backbone
    embed = sum(p.numel() for n, p in backbone.named_parameters() if n.startswith("embeddings"))
    total = embed
    for layer, _ in model.plan:
        parts = model.layer_parts(layer)
        for linear in (parts.query, parts.key, parts.value, parts.attn_out, parts.ffn_in, parts.ffn_out):
            total += linear.weight.numel() + linear.bias.numel()
        total += sum(p.numel() for p in (*parts.attn_norm.parameters(), *parts.ffn_norm.parameters()))
    total += sum(p.numel() for p in model.pooler.parameters()) + sum(p.numel() for p in model.exits[-1].parameters())
    return total
