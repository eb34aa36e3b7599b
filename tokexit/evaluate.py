"""Evaluate a trained model on a labelled file:
``python -m tokexit.evaluate model_dir=DIR data.test_file=PATH output_dir=OUT batch_size=N``.

Writes ``OUT/metrics.json`` (scores of every exit layer, full-depth score, counts, timing) and
``OUT/predictions.conll`` (word, gold tag, predicted tag; a blank line between sentences; every input word).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from tokexit.data.conll import bio_to_iob1
from tokexit.data.tagging import ReaderOptions, load_corpus, report_unseen_labels
from tokexit.evaluation import main_metric, score_layers
from tokexit.model_io import load_tagger
from tokexit.predict import predict_corpus
from tokexit.reporting import command_line, layer_table, write_json


def write_predictions(path: Path, corpus, predicted: list[list[str]]) -> None:
    """word TAB gold TAB prediction, in the file's own tag scheme (IOB1 files get IOB1 back)."""
    back = bio_to_iob1 if corpus.scheme == "iob1" else list
    with open(path, "w", encoding="utf-8") as f:
        for sentence, tags in zip(corpus.sentences, predicted, strict=True):
            gold = back(sentence.tags) if sentence.tags is not None else ["-"] * len(tags)
            for word, g, p in zip(sentence.words, gold, back(tags), strict=True):
                f.write(f"{word}\t{g}\t{p}\n")
            f.write("\n")


def evaluate(cfg: DictConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    encoder, tokenizer, labels, meta = load_tagger(cfg.model_dir)
    d = cfg.data
    corpus = load_corpus(str(d.test_file), ReaderOptions(d.format, d.label_column, d.tagset,
                                                         d.strip_position_digit))
    unseen = report_unseen_labels(corpus, labels)
    predictions, seconds = predict_corpus(encoder, tokenizer, labels, corpus, batch_size=cfg.batch_size,
                                          max_length=meta.get("max_length", 512), device=device)
    last = [[labels.labels[k] for k in p[-1].tolist()] for p in predictions]
    write_predictions(out / "predictions.conll", corpus, last)
    labelled = bool(corpus.sentences) and corpus.sentences[0].tags is not None
    scores = score_layers(corpus, labels.labels, labels.task, predictions) if labelled else []
    words = sum(len(s.words) for s in corpus.sentences)
    result = {
        "command": command_line(),
        "model_dir": str(cfg.model_dir),
        "test_file": str(d.test_file),
        "task": labels.task,
        "metric": main_metric(labels.task),
        "layers": [{"layer": i, **s} for i, s in enumerate(scores, start=1)],
        "full_depth": scores[-1] if scores else None,
        "counts": {"sentences": len(corpus.sentences), "words": words},
        "unseen_labels": unseen,
        "device": device,
        "batch_size": cfg.batch_size,
        "forward_seconds": round(seconds, 4),
        "words_per_second": round(words / seconds, 1) if seconds else None,
    }
    write_json(out / "metrics.json", result)
    if scores:
        print(layer_table(scores, result["metric"], f"{d.test_file}: {result['metric']} per exit layer"))
    print(f"{words} words in {seconds:.2f} s of forward passes; wrote {out / 'metrics.json'}")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
