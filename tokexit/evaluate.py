"""Evaluate a trained model on a labelled file, with the full model or an exit policy:

``python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT batch_size=N [exit=token_window
exit.window=5 exit.threshold=0.15 | exit.target_speedup=3]``.

Writes ``OUT/metrics.json`` (score of every exit layer, full-depth score, counts, timing; with an exit policy
also its score, ``flops_speedup``, ``wall_speedup``, ``avg_exit_layer`` and the histogram of exit layers) and
``OUT/predictions.conll`` (word, gold tag, predicted tag[, exit layer]; a blank line between sentences).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tokexit.data.conll import Corpus, bio_to_iob1
from tokexit.data.tagging import ReaderOptions, load_corpus, report_unseen_labels
from tokexit.engine.subnetwork import SubNetwork
from tokexit.evaluation import main_metric, score, score_layers
from tokexit.exits.none import NoExit
from tokexit.model_io import load_tagger, read_meta, resolve_device
from tokexit.predict import corpus_loader, run_corpus
from tokexit.reporting import command_line, layer_table, write_json

log = logging.getLogger("tokexit.evaluate")


def write_predictions(path: Path, corpus: Corpus, predicted: list[list[str]], exit_layers=None) -> None:
    """word TAB gold TAB prediction [TAB exit layer], in the file's own tag scheme (IOB1 files get IOB1 back)."""
    back = bio_to_iob1 if corpus.scheme == "iob1" else list
    with open(path, "w", encoding="utf-8") as f:
        for i, (sentence, tags) in enumerate(zip(corpus.sentences, predicted, strict=True)):
            gold = back(sentence.tags) if sentence.tags is not None else ["-"] * len(tags)
            layers = [f"\t{e}" for e in exit_layers[i].tolist()] if exit_layers is not None else [""] * len(tags)
            for word, g, p, e in zip(sentence.words, gold, back(tags), layers, strict=True):
                f.write(f"{word}\t{g}\t{p}{e}\n")
            f.write("\n")


def exit_summary(run, full, num_layers: int, layers: torch.Tensor) -> dict:
    """Speed-ups of ``run`` against the ``full`` model on the same data (both have ``flops``, ``full_flops`` and
    ``seconds``), average exit layer and histogram of the exit ``layers`` (one per word or example)."""
    hist = Counter(layers.tolist())
    return {
        "flops_speedup": round(run.full_flops / run.flops, 4) if run.flops else None,
        "wall_speedup": round(full.seconds / run.seconds, 4) if run.seconds else None,
        "avg_exit_layer": round(float(layers.float().mean()), 4) if len(layers) else None,
        "exit_histogram": {str(i): hist.get(i, 0) for i in range(1, num_layers + 1)},
        "forward_seconds": round(run.seconds, 4),
        "full_forward_seconds": round(full.seconds, 4),
    }


def calibrate(make_policy, target: float, run_fn, iterations: int = 12, upper: float = 1.0) -> tuple[float, list]:
    """Smallest threshold in [0, ``upper``] whose FLOPs speed-up reaches ``target`` (bisection; speed-up grows
    with the threshold). Returns the threshold and the trace of tried values."""
    lo, hi, trace = 0.0, upper, []
    for _ in range(iterations):
        mid = (lo + hi) / 2
        r = run_fn(make_policy(mid))
        speedup = r.full_flops / r.flops
        trace.append({"threshold": round(mid, 6), "flops_speedup": round(speedup, 4)})
        lo, hi = (lo, mid) if speedup >= target else (mid, hi)
    return hi, trace


def evaluate(cfg: DictConfig) -> dict:
    if read_meta(cfg.model_dir).get("kind") == "sequence_classifier":
        from tokexit.evaluate_classification import evaluate_classifier

        return evaluate_classifier(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    encoder, tokenizer, labels, meta = load_tagger(cfg.model_dir)
    encoder.use_subnetwork(SubNetwork(cfg.subnetwork.width, cfg.subnetwork.depth))
    max_length = meta.get("max_length", 512)
    d = cfg.data
    options = ReaderOptions(d.format, d.label_column, d.tagset, d.strip_position_digit)
    corpus = load_corpus(str(d.test_file), options)
    unseen = report_unseen_labels(corpus, labels)
    labelled = bool(corpus.sentences) and corpus.sentences[0].tags is not None
    metric = main_metric(labels.task)

    def load(c: Corpus):
        return corpus_loader(c, tokenizer, labels, cfg.batch_size, max_length)

    exit_cfg = OmegaConf.to_container(cfg.exit, resolve=True)
    target = exit_cfg.pop("target_speedup", None)
    policy = instantiate(exit_cfg)
    words = sum(len(s.words) for s in corpus.sentences)
    result = {"command": command_line(), "model_dir": str(cfg.model_dir), "test_file": str(d.test_file),
              "task": labels.task, "metric": metric, "counts": {"sentences": len(corpus.sentences), "words": words},
              "unseen_labels": unseen, "device": device, "batch_size": cfg.batch_size,
              "subnetwork": {"width": cfg.subnetwork.width, "depth": cfg.subnetwork.depth}}
    if not corpus.sentences:
        write_predictions(out / "predictions.conll", corpus, [])
        write_json(out / "metrics.json", {**result, "layers": [], "full_depth": None})
        return {**result, "layers": [], "full_depth": None}

    loader = load(corpus)
    full = run_corpus(encoder, loader, corpus, None, device)
    scores = score_layers(corpus, labels.labels, labels.task, full.layer_predictions) if labelled else []
    result.update({"layers": [{"layer": i, **s} for i, s in enumerate(scores, start=1)],
                   "full_depth": scores[-1] if scores else None,
                   "forward_seconds": round(full.seconds, 4),
                   "words_per_second": round(words / full.seconds, 1) if full.seconds else None})
    run = full
    if not isinstance(policy, NoExit):
        if target is not None:
            if "threshold" not in exit_cfg:
                raise ValueError(f"exit.target_speedup needs a policy with a threshold, not '{policy.name}'")
            if not d.validation_file:
                raise ValueError("exit.target_speedup calibrates on data.validation_file: give one")
            val = load_corpus(str(d.validation_file), options)
            val_loader = load(val)
            threshold, trace = calibrate(lambda t: instantiate(exit_cfg, threshold=t), float(target),
                                         lambda p: run_corpus(encoder, val_loader, val, p, device))
            policy = instantiate(exit_cfg, threshold=threshold)
            result["calibration"] = {"target_speedup": target, "validation_file": str(d.validation_file),
                                     "threshold": threshold, "trace": trace}
            log.info("calibrated threshold %.5f for a %.2fx FLOPs speed-up on %s", threshold, target, val.path)
        run = run_corpus(encoder, loader, corpus, policy, device)
        for _ in range(cfg.timing_repeats - 1):  # interleaved repeats, best of each: robust to a busy machine
            full.seconds = min(full.seconds, run_corpus(encoder, loader, corpus, NoExit(), device).seconds)
            run.seconds = min(run.seconds, run_corpus(encoder, loader, corpus, policy, device).seconds)
        result["timing_repeats"] = cfg.timing_repeats
        result["exit"] = policy.describe()
        result.update(exit_summary(run, full, len(encoder.plan), torch.cat(run.exit_layers)))
        if labelled:
            tags = [[labels.labels[k] for k in p.tolist()] for p in run.predictions]
            result["score"] = score([s.tags for s in corpus.sentences], tags, labels.task)
    else:
        result["exit"] = policy.describe()
        result.update(exit_summary(full, full, len(encoder.plan), torch.cat(full.exit_layers)))
        result["score"] = result["full_depth"]
    predicted = [[labels.labels[k] for k in p.tolist()] for p in run.predictions]
    with_layers = run.exit_layers if not isinstance(policy, NoExit) else None
    write_predictions(out / "predictions.conll", corpus, predicted, with_layers)
    write_json(out / "metrics.json", result)
    if scores:
        print(layer_table(scores, metric, f"{d.test_file}: {metric} per exit layer (full model)"))
    if labelled and not isinstance(policy, NoExit):
        print(f"{policy.describe()}: {metric} {result['score'][metric]:.2f} | FLOPs speed-up "
              f"{result['flops_speedup']:.2f}x | wall-clock speed-up {result['wall_speedup']:.2f}x | "
              f"average exit layer {result['avg_exit_layer']:.2f}")
    print(f"{words} words; wrote {out / 'metrics.json'}")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
