"""End-to-end tagging speed: tokexit against what a user would run instead, in words per second.

Each row tags a file: the timed part reads it (tokexit's CoNLL reader, the same for every row), tokenises, runs the
model and returns one tag per input word, in memory. Loading the model is not timed. Rows:

- ``hf-sorted``: ``AutoModelForTokenClassification`` holding the tokexit model's backbone and last exit head
  (``benchmark_exit.hf_tagger``), sentences tokenised at once by the fast tokenizer, sorted by length into batches,
  each word tagged by its first subword (as tokexit does);
- ``hf-pipeline``: ``transformers.pipeline("token-classification")`` on the same model, fed the pre-split words
  (``is_split_into_words=True``, ``ignore_labels=[]``, no aggregation, the pipeline's own ``batch_size``, input
  order); each word takes the tag of its first subword (the first entry whose start offset falls in the word);
- ``ort-fp32`` / ``ort-int8``: ONNX Runtime on that model exported to ONNX (dynamic batch and length;
  int8: ``onnxruntime.quantization.quantize_dynamic``), with the ``hf-sorted`` tokenisation and batching;
- ``hf-sorted-bf16``: ``hf-sorted`` with the model in bfloat16 (``model.to(torch.bfloat16)``: what a user with a
  bf16-capable CPU would run instead);
- ``tokexit-fp32`` / ``-int8`` / ``-bf16``: ``Tagger.load(dir[, quantize="int8"|"bf16"]).tag(words, batch_size)``,
  full model;
- ``tokexit-Nx-fp32`` / ``-int8`` / ``-bf16``: the token-window exit at an N x FLOPs speed-up:
  ``Tagger.tag(speed=N)`` when the model directory holds that speed profile (``tokexit.evaluate ...
  save_profile=true``), else a threshold calibrated here on ``--calibration-file`` with
  ``tokexit.inference.calibration`` (the fp32 threshold serves int8 and bf16 too);
- ``dynabert-Nx``: a DynaBERT tagger (``--dynabert-dir``) at half width with the token window; skipped, with the
  reason in the JSON, when no directory is given or it is missing. Its F1 is only given when its labels are the
  test file's.

Protocol: every row lives in its own process (spawned once, model loaded once; only the row being timed runs, the
others wait on a pipe), ``--threads`` torch threads and ONNX Runtime intra-op threads (spinning off unless
``--ort-spinning``). For every corpus and batch size: one untimed warm-up call per row (its predictions give the
F1 and the word check), then ``--repeats`` rounds calling every row in turn (the starting row rotates), the best
time of each counts. Peak memory: the row process's resident set high-water mark (VmHWM, reset before each corpus
and batch size through /proc/self/clear_refs; the model is resident throughout, so it is included); on systems
without it, ``ru_maxrss`` since the process started.

Corpora: ``--test-file`` (CoNLL-2003 eng.testb; F1 by seqeval as tokexit scores it) and a large corpus of the
``--large-files`` train sets concatenated (cycled) up to ``--large-sentences`` sentences (speed only). The JSON
records what was used.

Short check (a few minutes on 2 busy cores):

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_tagging.py --limit 500 --large-sentences 500 --repeats 1 \\
        --out /tmp/bench_tagging

The report (reports/benchmark_tagging.{json,md}) comes from, on a quiet machine:

    OMP_NUM_THREADS=2 .venv/bin/python scripts/benchmark_tagging.py \\
        --model-dir /work/runs/conll2003-selfsampling/model --repeats 3 --out reports/benchmark_tagging
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
ORT_BASELINE = "ort-fp32"  # the speed ratios are to this row
TOKEXIT_BASELINE = "tokexit-fp32"  # the F1 deltas are to this row
PRECISIONS = ("fp32", "int8", "bf16")  # tokexit rows: fp32, or Tagger.load(quantize=...)
MAX_DROP = 0.3  # the largest F1 loss against tokexit fp32 full for the speed verdict
DEFAULT_LARGE = [str(SHARED / "conll2003" / "eng.train"), str(SHARED / "conll2000" / "train.txt.gz"),
                 str(SHARED / "ud_english_ewt" / "en_ewt-ud-train.conllu.gz")]

log = logging.getLogger("benchmark_tagging")


# ------------------------------------------------------------------------------------------------------ rows


@dataclass
class RowSpec:
    """What a row process builds (picklable): ``kind`` hf-sorted | hf-pipeline | ort | tokexit, and its options."""

    name: str
    kind: str
    model_dir: str
    options: dict = field(default_factory=dict)


def quantize_option(precision: str) -> str | None:
    """``Tagger.load``'s ``quantize`` for a row's precision suffix."""
    return None if precision == "fp32" else precision


def first_subword_positions(word_ids: list[int | None]) -> list[int]:
    """Index of each word's first subword, in word order, from a fast tokenizer's ``word_ids``."""
    positions, previous = [], None
    for i, w in enumerate(word_ids):
        if w is not None and w != previous:
            positions.append(i)
        previous = w
    return positions


class SortedTagger:
    """Tokenise every sentence at once, sort by length, pad each batch, tag words by their first subword.

    ``forward(ids, mask)`` maps (B, T) int64 arrays to (B, T) label ids. Words beyond ``max_length`` subwords (the
    plain model cannot see them) get ``O`` and are counted in ``truncated_words``."""

    def __init__(self, tokenizer, labels: list[str], forward, max_length: int = 512):
        self.tokenizer, self.labels, self.forward, self.max_length = tokenizer, labels, forward, max_length
        self.truncated_words = 0

    def tag(self, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
        present = [i for i, s in enumerate(sentences) if s]
        enc = self.tokenizer([sentences[i] for i in present], is_split_into_words=True, truncation=True,
                             max_length=self.max_length)
        ids = enc["input_ids"]
        firsts = [first_subword_positions(enc.word_ids(k)) for k in range(len(present))]
        order = sorted(range(len(present)), key=lambda k: len(ids[k]))
        out: list[list[str]] = [[] for _ in sentences]
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(ids[k]) for k in chunk)
            batch = np.full((len(chunk), width), pad, dtype=np.int64)  # (B, T)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for r, k in enumerate(chunk):
                batch[r, :len(ids[k])], mask[r, :len(ids[k])] = ids[k], 1
            predicted = self.forward(batch, mask)  # (B, T) label ids
            for r, k in enumerate(chunk):
                words = sentences[present[k]]
                tags = [self.labels[t] for t in predicted[r, firsts[k]].tolist()]
                self.truncated_words += len(words) - len(tags)
                out[present[k]] = tags + ["O"] * (len(words) - len(tags))
        return out


class PipelineTagger:
    """``transformers.pipeline("token-classification")`` on pre-split words; first-subword tags (see module)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def tag(self, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
        present = [s for s in sentences if s]
        results = self.pipe(present, is_split_into_words=True, batch_size=batch_size, ignore_labels=[])
        tagged = iter([self.words_tags(s, r) for s, r in zip(present, results, strict=True)])
        return [next(tagged) if s else [] for s in sentences]

    @staticmethod
    def words_tags(words: list[str], entries: list[dict]) -> list[str]:
        """The pipeline joins words with one space; a word's tag is that of the first entry starting inside it."""
        starts = list(itertools.accumulate((len(w) + 1 for w in words[:-1]), initial=0))
        tags: list[str | None] = [None] * len(words)
        for e in entries:
            j = bisect.bisect_right(starts, e["start"]) - 1
            if tags[j] is None:
                tags[j] = e["entity"]
        return [t or "O" for t in tags]


class TokexitTagger:
    """``Tagger.tag`` with an exit policy or a stored speed profile; tags back to BIO for scoring."""

    def __init__(self, tagger, exit=None, speed=None):
        from tokexit.data.conll import iob1_to_bio

        self.tagger, self.exit, self.speed = tagger, exit, speed
        self.to_bio = iob1_to_bio if tagger.labels.scheme == "iob1" else None
        self.exit_layers: list[int] = []

    def tag(self, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
        kwargs = {"speed": self.speed} if self.speed is not None else {"exit": self.exit}
        tagged = self.tagger.tag(sentences, batch_size=batch_size, **kwargs)
        self.exit_layers = [t.exit_layer for s in tagged for t in s]
        tags = [[t.tag for t in s] for s in tagged]
        return [self.to_bio(t) for t in tags] if self.to_bio else tags


def build_row(spec: RowSpec, threads: int):
    """The tagger object of a row (in its own process)."""
    from tokexit.model_io import load_tagger

    o = spec.options
    if spec.kind == "tokexit":
        from tokexit.api import Tagger
        from tokexit.engine.subnetwork import SubNetwork
        from tokexit.exits import TokenWindowExit

        tagger = Tagger.load(spec.model_dir, device="cpu", quantize=o.get("quantize"))
        if o.get("width", 1.0) != 1.0:
            tagger.encoder.use_subnetwork(SubNetwork(o["width"], 1.0))
        exit = TokenWindowExit(o["threshold"], window=o["window"]) if "threshold" in o else None
        return TokexitTagger(tagger, exit=exit, speed=o.get("speed"))
    encoder, tokenizer, labels, meta = load_tagger(spec.model_dir)
    from benchmark_exit import hf_tagger

    model = hf_tagger(encoder.backbone, encoder)
    model.config.id2label = dict(enumerate(labels.labels))  # the pipeline answers in label names
    model.config.label2id = {label: i for i, label in enumerate(labels.labels)}
    if spec.kind == "hf-pipeline":
        from transformers import pipeline

        return PipelineTagger(pipeline("token-classification", model=model, tokenizer=tokenizer, device="cpu"))
    max_length = min(meta.get("max_length", 512), model.config.max_position_embeddings)
    if o.get("dtype"):  # e.g. plain transformers in bfloat16, as a user with a bf16-capable CPU would run it
        model.to(getattr(torch, o["dtype"]))
    if spec.kind == "hf-sorted":
        def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            return logits.argmax(-1).numpy()

        return SortedTagger(tokenizer, labels.labels, forward, max_length)
    if spec.kind == "ort":
        from onnx_tagger import ort_session

        session = ort_session(o["onnx"], threads, spinning=o.get("spinning", False))
        return SortedTagger(tokenizer, labels.labels,
                            lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
                            .argmax(-1), max_length)
    raise ValueError(f"unknown row kind {spec.kind!r}")


def rss_mib(field_name: str) -> float | None:
    """VmHWM / VmRSS of this process in MiB (None where /proc is absent)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def reset_peak() -> str:
    """Reset the resident high-water mark; returns how peaks are measured from now on."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM since reset"
    except OSError:
        return "ru_maxrss since process start"


def peak_mib(method: str) -> float | None:
    if method.startswith("VmHWM"):
        return rss_mib("VmHWM")
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def read_words(path: str) -> list[list[str]]:
    """The timed reading step of every row: tokexit's CoNLL reader, words only."""
    from tokexit.data.conll import read_corpus

    return [s.words for s in read_corpus(path).sentences]


def worker(conn, spec: RowSpec, threads: int, scripts: str) -> None:
    """A row's process: build the row, then answer ``("run", path, batch_size, keep)`` until ``("stop",)``."""
    sys.path.insert(0, scripts)
    torch.set_num_threads(threads)
    logging.disable(logging.WARNING)
    try:
        start = time.perf_counter()
        row = build_row(spec, threads)
        conn.send({"ok": True, "load_s": round(time.perf_counter() - start, 2), "rss_mib": rss_mib("VmRSS")})
    except Exception as e:  # a row that cannot be built is a result to report (e.g. int8 not available yet)
        conn.send({"ok": False, "reason": f"{type(e).__name__}: {e}"[:500]})
        return
    method = "ru_maxrss since process start"
    while True:
        try:
            command = conn.recv()
        except EOFError:  # the benchmark process is gone
            return
        if command[0] == "stop":
            return
        if command[0] == "reset":
            method = reset_peak()
            conn.send({"ok": True})
            continue
        _, path, batch_size, keep = command
        try:
            start = time.perf_counter()
            sentences = read_words(path)
            tags = row.tag(sentences, batch_size)
            seconds = time.perf_counter() - start
        except Exception as e:
            conn.send({"ok": False, "reason": f"{type(e).__name__}: {e}"[:500]})
            continue
        if len(tags) != len(sentences):
            conn.send({"ok": False, "reason": f"{len(tags)} tagged sentences for {len(sentences)} read"})
            continue
        bad = [i for i, (s, t) in enumerate(zip(sentences, tags, strict=True)) if len(s) != len(t)]
        if bad:
            conn.send({"ok": False, "reason": f"sentence {bad[:1]}: words and tags differ in number"})
            continue
        layers = getattr(row, "exit_layers", None)
        conn.send({"ok": True, "seconds": seconds, "words_in": sum(map(len, sentences)),
                   "words_out": sum(map(len, tags)), "tags": tags if keep else None,
                   "avg_exit_layer": round(float(np.mean(layers)), 3) if layers else None,
                   "truncated_words": getattr(row, "truncated_words", 0),
                   "peak_rss_mib": peak_mib(method), "peak_method": method})


# ------------------------------------------------------------------------------------------------ preparation


def write_words_file(path: Path, sentences: list[list[str]]) -> Path:
    """A CoNLL file of the sentences (word, then ``O``): the input every row reads. A space inside a word (CoNLL-U
    allows it) becomes ``_``, so that the file keeps two columns."""
    with path.open("w", encoding="utf-8") as f:
        for s in sentences:
            f.write("".join(f"{'_'.join(w.split())}\tO\n" for w in s) + "\n")
    return path


def large_corpus(files: list[str], sentences: int) -> tuple[list[list[str]], dict]:
    """The non-empty sentences of ``files`` concatenated, cycled up to ``sentences``; and what was used."""
    from tokexit.data.conll import read_corpus

    pool, used = [], []
    for f in files:
        if not Path(f).is_file():
            log.warning("large corpus: %s is missing, left out", f)
            continue
        words = [s.words for s in read_corpus(f).sentences if s.words]
        pool += words
        used.append({"file": f, "sentences": len(words)})
    if not pool:
        return [], {"files": used, "sentences": 0, "words": 0}
    chosen = list(itertools.islice(itertools.cycle(pool), sentences))
    return chosen, {"files": used, "sentences": len(chosen), "words": sum(map(len, chosen)),
                    "cycles": round(len(chosen) / len(pool), 3)}


def calibrate_window(model_dir: str, file: str, target: float, window: int, iterations: int, limit: int,
                     width: float = 1.0) -> dict:
    """The token-window threshold reaching a ``target`` FLOPs speed-up on ``file`` (fp32, batch 32), with
    tokexit's own calibration (bisection; see :mod:`tokexit.inference.calibration`)."""
    from tokexit.data.conll import read_corpus
    from tokexit.engine.subnetwork import SubNetwork
    from tokexit.exits import TokenWindowExit
    from tokexit.inference.calibration import Knob, calibrate
    from tokexit.inference.runs import run_batches
    from tokexit.inference.setting import Setting
    from tokexit.inference.tagging import WordBatches, corpus_loader
    from tokexit.model_io import load_tagger

    encoder, tokenizer, labels, meta = load_tagger(model_dir)
    if width != 1.0:
        encoder.use_subnetwork(SubNetwork(width, 1.0))
    corpus = read_corpus(file)
    if limit:
        corpus.sentences = corpus.sentences[:limit]
    batches = list(corpus_loader(corpus, tokenizer, labels, 32, meta.get("max_length", 512)))

    def speedup(setting: Setting) -> float:
        run = run_batches(encoder, batches, WordBatches(corpus), setting)
        return run.full_flops / run.flops

    policy = TokenWindowExit(0.0, window=window)
    knob = Knob("exit.threshold", "token_window", 0.0, policy.largest_threshold(encoder.num_labels),
                lambda value: Setting(TokenWindowExit(value, window=window)))
    found = calibrate(knob, target, speedup, iterations)
    return {"threshold": found["threshold"], "flops_speedup": found["flops_speedup"],
            "reachable_speedup": found["reachable_speedup"], "reached": found["reached"], "file": file,
            "sentences": len(corpus.sentences), "window": window, "iterations": iterations}


def export_onnx(model_dir: str, folder: Path, int8: bool) -> dict[str, str]:
    """fp32 (and int8) ONNX files of the plain tagger; or the reason they cannot be made."""
    from benchmark_exit import hf_tagger
    from onnx_tagger import export_tagger, quantize_int8

    from tokexit.model_io import load_tagger

    encoder, tokenizer, _, _ = load_tagger(model_dir)
    model = hf_tagger(encoder.backbone, encoder)
    example = tokenizer([["A", "padded", "example", "sentence"], ["Short"]], is_split_into_words=True,
                        padding=True, return_tensors="pt")  # traced with padding: dynamic axes, any mask
    fp32 = export_tagger(model, dict(example), folder / "tagger.onnx", dynamic=True)
    files = {"fp32": str(fp32)}
    if int8:
        files["int8"] = str(quantize_int8(fp32, folder / "tagger.int8.onnx"))
    return files


# --------------------------------------------------------------------------------------------------- the run


def row_specs(args: argparse.Namespace, folder: Path) -> tuple[list[RowSpec], dict[str, str], dict]:
    """The rows asked for: (specs, skipped rows and why, calibrations)."""
    from tokexit.model_io import read_profiles, speed_key

    wanted = args.rows
    specs, skipped, calibrations = [], {}, {}
    d = args.model_dir
    if "hf-sorted" in wanted:
        specs.append(RowSpec("hf-sorted", "hf-sorted", d))
    if "hf-pipeline" in wanted:
        specs.append(RowSpec("hf-pipeline", "hf-pipeline", d))
    ort_rows = [r for r in ("ort-fp32", "ort-int8") if r in wanted]
    if ort_rows:
        try:
            files = export_onnx(d, folder, "ort-int8" in wanted)
            for r in ort_rows:
                specs.append(RowSpec(r, "ort", d, {"onnx": files[r.split("-")[1]], "spinning": args.ort_spinning}))
        except Exception as e:  # onnxruntime missing or an exporter gap: reported, the other rows still run
            for r in ort_rows:
                skipped[r] = f"ONNX export failed: {type(e).__name__}: {e}"[:500]
    if "hf-sorted-bf16" in wanted:
        specs.append(RowSpec("hf-sorted-bf16", "hf-sorted", d, {"dtype": "bfloat16"}))
    for precision in PRECISIONS:
        if f"tokexit-{precision}" in wanted:
            specs.append(RowSpec(f"tokexit-{precision}", "tokexit", d, {"quantize": quantize_option(precision)}))
    profiles = read_profiles(d)
    for speed in args.speeds:
        names = [f"tokexit-{speed:g}x-{p}" for p in PRECISIONS if f"tokexit-{speed:g}x-{p}" in wanted]
        if not names:
            continue
        if speed_key(speed) in profiles:
            setting = {"speed": speed}
            calibrations[f"{speed:g}x"] = {"profile": profiles[speed_key(speed)]}
        else:
            found = calibrate_window(d, args.calibration_file, speed, args.window, args.calibration_iterations,
                                     args.calibration_limit)
            calibrations[f"{speed:g}x"] = found
            setting = {"threshold": found["threshold"], "window": args.window}
        for name in names:
            specs.append(RowSpec(name, "tokexit", d, {**setting, "quantize": quantize_option(name.rsplit("-", 1)[1])}))
    if "dynabert" in wanted:
        name = f"dynabert-w0.5-{args.speeds[0]:g}x"
        if not args.dynabert_dir:
            skipped[name] = "no --dynabert-dir given (a WNUT-17 DynaBERT tagger: scripts/train_dynabert_tagger.sh)"
        elif not Path(args.dynabert_dir, "tokexit.json").is_file():
            skipped[name] = f"{args.dynabert_dir}: no tokexit model there"
        else:
            found = calibrate_window(args.dynabert_dir, args.dynabert_calibration_file or args.calibration_file,
                                     args.speeds[0], args.window, args.calibration_iterations,
                                     args.calibration_limit, width=0.5)
            calibrations[name] = found
            specs.append(RowSpec(name, "tokexit", args.dynabert_dir,
                                 {"threshold": found["threshold"], "window": args.window, "width": 0.5}))
    return specs, skipped, calibrations


class Rows:
    """The row processes: started together, asked in turn."""

    def __init__(self, specs: list[RowSpec], threads: int):
        ctx = mp.get_context("spawn")
        self.conns, self.procs, self.ready, self.failed = {}, {}, {}, {}
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, spec, threads, str(Path(__file__).parent)), daemon=True)
            proc.start()
            self.conns[spec.name], self.procs[spec.name] = parent, proc
        for name, conn in self.conns.items():  # wait for all: loading is not timed
            answer = conn.recv()
            (self.ready if answer["ok"] else self.failed)[name] = answer
        for name in self.failed:
            self.conns.pop(name).send(("stop",))

    def ask(self, name: str, *command) -> dict:
        self.conns[name].send(command)
        return self.conns[name].recv()

    def stop(self) -> None:
        for name, conn in self.conns.items():
            conn.send(("stop",))
            self.procs[name].join(timeout=30)


def run_cell(rows: Rows, path: str, batch_size: int, repeats: int, only: list[str] | None = None) -> dict[str, dict]:
    """One corpus at one batch size: warm-up (predictions kept), then interleaved rounds; per row its results.
    ``only``: these rows (of those running) instead of all; with ``repeats`` 0 the warm-up pass is the timing."""
    names = [name for name in rows.conns if only is None or name in only]
    for name in names:
        rows.ask(name, "reset")
    results: dict[str, dict] = {}
    for name in names:
        answer = rows.ask(name, "run", path, batch_size, True)
        answer["times"] = []
        results[name] = answer
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if not results[name]["ok"]:
                continue
            answer = rows.ask(name, "run", path, batch_size, False)
            if not answer["ok"]:
                results[name] = answer
                continue
            results[name]["times"].append(round(answer["seconds"], 4))
            results[name]["peak_rss_mib"] = answer["peak_rss_mib"]
    return results


def summarise(results: dict[str, dict], gold: list[list[str]] | None, task: str, words: int) -> list[dict]:
    """Per row: words/s (best time), ratio to ORT fp32, F1, delta F1 to tokexit fp32 full, memory, and the
    share of words tagged as tokexit fp32 full tags them (``agreement``: same weights, so near 1 for every fp32
    full-model row)."""
    from tokexit.reporting.scores import score

    rows = []
    for name, r in results.items():
        if not r["ok"]:
            rows.append({"row": name, "status": "failed", "reason": r["reason"]})
            continue
        if r["words_out"] != words or r["words_in"] != words:
            raise RuntimeError(f"{name}: {r['words_out']} tags for {r['words_in']} words read, {words} expected")
        best = min(r["times"]) if r["times"] else r["seconds"]
        entry = {"row": name, "status": "ok", "words": r["words_out"], "best_s": round(best, 4),
                 "times_s": r["times"], "warmup_s": round(r["seconds"], 4),
                 "words_per_s": round(words / best, 1), "peak_rss_mib": r["peak_rss_mib"],
                 "peak_method": r["peak_method"], "avg_exit_layer": r["avg_exit_layer"],
                 "truncated_words": r["truncated_words"]}
        if gold is not None and {t for s in r["tags"] for t in s} <= {t for s in gold for t in s}:
            entry.update({k: round(v, 2) for k, v in score(gold, r["tags"], task).items()})
        elif gold is not None:  # a model of other labels (the WNUT-17 DynaBERT tagger): speed only
            entry["score_note"] = "tags outside the test file's label set: not scored"
        rows.append(entry)
    by_name = {e["row"]: e for e in rows if e["status"] == "ok"}
    metric = "f1" if task == "ner" else "accuracy"
    reference = results.get(TOKEXIT_BASELINE, {}).get("tags")
    for e in by_name.values():
        tags = results[e["row"]]["tags"]
        e["agreement"] = (round(sum(a == b for s, t in zip(tags, reference, strict=True)
                                    for a, b in zip(s, t, strict=True)) / max(words, 1), 4)
                          if reference is not None else None)  # share of words tagged as tokexit-fp32 does
        base = by_name.get(ORT_BASELINE)
        e["x_ort_fp32"] = round(e["words_per_s"] / base["words_per_s"], 3) if base else None
        ref = by_name.get(TOKEXIT_BASELINE)
        e["delta_score"] = (round(e[metric] - ref[metric], 2) if ref and metric in e and metric in ref else None)
    return rows


def verdict(cell: dict, max_drop: float = MAX_DROP) -> dict | None:
    """The issue's test on a scored cell: the fastest tokexit row within ``max_drop`` of tokexit fp32's score, its
    speed over ORT fp32 and ORT int8; at batch >= 32 it must reach 2x ORT fp32 and beat ORT int8, below that beat
    ORT fp32. None when a needed row is missing."""
    ok = {e["row"]: e for e in cell["rows"] if e["status"] == "ok"}
    if not cell["scored"] or ORT_BASELINE not in ok or TOKEXIT_BASELINE not in ok:
        return None
    within = [e for name, e in ok.items() if name.startswith("tokexit") and e["delta_score"] is not None
              and e["delta_score"] >= -max_drop]
    best = max(within, key=lambda e: e["words_per_s"])
    others = [e for name, e in ok.items() if not name.startswith(("tokexit", "dynabert"))
              and (e["delta_score"] is None or e["delta_score"] >= -max_drop)]
    fastest_other = max(others, key=lambda e: e["words_per_s"])  # what a user would run instead, at that score
    over_fp32 = best["words_per_s"] / ok[ORT_BASELINE]["words_per_s"]
    over_int8 = best["words_per_s"] / ok["ort-int8"]["words_per_s"] if "ort-int8" in ok else None
    if cell["batch_size"] >= 32:
        target = f"x ORT fp32 >= 2.0 and x ORT int8 > 1 at a score drop <= {max_drop}"
        passed = over_fp32 >= 2.0 and over_int8 is not None and over_int8 > 1.0
    else:
        target, passed = f"x ORT fp32 > 1 at a score drop <= {max_drop}", over_fp32 > 1.0
    return {"row": best["row"], "delta_score": best["delta_score"], "x_ort_fp32": round(over_fp32, 3),
            "x_ort_int8": None if over_int8 is None else round(over_int8, 3), "fastest_other": fastest_other["row"],
            "x_fastest_other": round(best["words_per_s"] / fastest_other["words_per_s"], 3), "target": target,
            "verdict": "pass" if passed else "FAIL"}


def machine() -> dict:
    from benchmark_exit import machine_info

    info = machine_info(torch.device("cpu"))
    for module in ("onnxruntime", "numpy", "datasets", "tokenizers"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = ["# End-to-end tagging speed: tokexit against what users run instead", "",
             f"Command: `{report['command']}`", "",
             f"Model: `{s['model_dir']}`. Machine: {m['device_name']}, {s['threads']} threads (torch and ONNX "
             f"Runtime intra-op), os.cpu_count() {m['os_cpu_count']}, load average {m['load_average_start']} at "
             f"start, {m['load_average_end']} at end; torch {m['torch']}, transformers {m['transformers']}, "
             f"onnxruntime {m['onnxruntime']}. {report['elapsed_s']} s in all.", "",
             "Words/s: file read, tokenised, tagged, one tag per word in memory (model load excluded); best of "
             f"{s['repeats']} interleaved rounds after a warm-up"
             + (f" (large corpus: {s['large_repeats']} rounds; 0: the one warm-up pass is the timing, kernel "
                "creation included)" if s.get("large_repeats", s["repeats"]) != s["repeats"] else "")
             + ", every row in its own process. "
             f"x ORT = words/s over `{ORT_BASELINE}`; delta = score minus `{TOKEXIT_BASELINE}`'s. Peak RSS: the row "
             "process's resident high-water mark while tagging (model included).", ""]
    for cell in report["cells"]:
        scored = cell["scored"]
        lines += [f"## {cell['corpus']}, batch {cell['batch_size']} ({cell['sentences']} sentences, "
                  f"{cell['words']} words)", "",
                  "| row | words/s | x ORT fp32 | " + ("F1 | delta F1 | " if scored else "")
                  + "peak RSS MiB | avg exit layer |",
                  "|---|---:|---:|" + ("---:|---:|" if scored else "") + "---:|---:|"]
        for e in cell["rows"]:
            if e["status"] != "ok":
                lines.append(f"| {e['row']} | failed: {e['reason'][:120]} |")
                continue
            delta = "" if e["delta_score"] is None else e["delta_score"]
            score_cols = (f"{e.get('f1', e.get('accuracy', 'not scored'))} | {delta} | " if scored else "")
            lines.append(f"| {e['row']} | {e['words_per_s']:.0f} | {e['x_ort_fp32']} | {score_cols}"
                         f"{e['peak_rss_mib']} | {e['avg_exit_layer'] or ''} |")
        v = cell.get("verdict")
        if v:
            int8 = "no ORT int8 row" if v["x_ort_int8"] is None else f"{v['x_ort_int8']}x ORT int8"
            lines += ["", f"Verdict: fastest tokexit row within {MAX_DROP} of tokexit fp32's score: `{v['row']}` "
                          f"(delta {v['delta_score']}), {v['x_ort_fp32']}x ORT fp32, {int8}, {v['x_fastest_other']}x "
                          f"the fastest other row within {MAX_DROP} (`{v['fastest_other']}`); target {v['target']}: "
                          f"**{v['verdict']}**"]
        lines.append("")
    if report["skipped"]:
        lines += ["Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in report["skipped"].items()), ""]
    if report["calibrations"]:
        lines += ["Token-window settings: " + "; ".join(
            f"{k}: " + (f"stored profile {v['profile'].get('exit')}" if "profile" in v else
                        f"threshold {v['threshold']:.5f} (window {v['window']}) for {v['flops_speedup']}x FLOPs on "
                        f"{Path(v['file']).name} ({v['sentences']} sentences)")
            for k, v in report["calibrations"].items()), ""]
    return "\n".join(lines)


ALL_ROWS = ["hf-sorted", "hf-sorted-bf16", "hf-pipeline", "ort-fp32", "ort-int8",
            *(f"tokexit-{speed}{p}" for speed in ("", "2x-", "3x-") for p in PRECISIONS), "dynabert"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=str(REPO / "runs" / "conll2003-minilm-l6-selfsampling" / "model"),
                   help="a tokexit tagger (default: experiment=conll2003_selfsampling's output)")
    p.add_argument("--test-file", default=str(SHARED / "conll2003" / "eng.testb"))
    p.add_argument("--calibration-file", default=str(SHARED / "conll2003" / "eng.testa"))
    p.add_argument("--calibration-limit", type=int, default=0, help="sentences of the calibration file (0: all)")
    p.add_argument("--calibration-iterations", type=int, default=10)
    p.add_argument("--large-files", nargs="*", default=DEFAULT_LARGE)
    p.add_argument("--large-sentences", type=int, default=20000, help="0: no large corpus")
    p.add_argument("--limit", type=int, default=0, help="first N sentences of the test file (0: all)")
    p.add_argument("--batch-sizes", default="32,1", help="for the test file")
    p.add_argument("--large-batch-sizes", default="32", help="for the large corpus")
    p.add_argument("--large-rows", default=None, help="comma-separated rows to run on the large corpus (default: all)")
    p.add_argument("--large-repeats", type=int, default=None,
                   help="timed rounds on the large corpus (default --repeats; 0: the warm-up pass is timed)")
    p.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated, of: {','.join(ALL_ROWS)} "
                   "(dynabert: skipped, with the reason in the JSON, without --dynabert-dir)")
    p.add_argument("--speeds", default="2,3", help="FLOPs speed-ups of the token-window rows (tokexit-Nx-*)")
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--dynabert-dir", default=None)
    p.add_argument("--dynabert-calibration-file", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ort-spinning", action="store_true", help="let ONNX Runtime's idle threads busy-wait")
    p.add_argument("--out", default=str(REPO / "reports" / "benchmark_tagging"))
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ALL_ROWS and not r.startswith("tokexit-")]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {ALL_ROWS}")
    args.speeds = [float(x) for x in args.speeds.split(",") if x]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    args.large_batch_sizes = [int(x) for x in args.large_batch_sizes.split(",") if x]
    args.large_rows = [r.strip() for r in args.large_rows.split(",") if r.strip()] if args.large_rows else None
    args.large_repeats = args.repeats if args.large_repeats is None else args.large_repeats
    return args


def main(argv: list[str] | None = None) -> dict:
    from tokexit.data.conll import read_corpus
    from tokexit.model_io import read_meta
    from tokexit.reporting.output import command_line, write_json

    args = parse_args(argv)
    started = time.perf_counter()
    info = machine()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_tagging_") as tmp:
        folder = Path(tmp)
        test = read_corpus(args.test_file)
        sentences = test.sentences[:args.limit] if args.limit else test.sentences
        corpora = [{"corpus": Path(args.test_file).name, "file": args.test_file, "batch_sizes": args.batch_sizes,
                    "path": str(write_words_file(folder / "test.conll", [s.words for s in sentences])),
                    "sentences": len(sentences), "words": sum(len(s.words) for s in sentences),
                    "gold": [s.tags for s in sentences] if sentences and sentences[0].tags else None}]
        large_info = None
        if args.large_sentences:
            large, large_info = large_corpus(args.large_files, args.large_sentences)
            if large:
                corpora.append({"corpus": f"large ({large_info['sentences']} train sentences)",
                                "batch_sizes": args.large_batch_sizes, "gold": None,
                                "path": str(write_words_file(folder / "large.conll", large)),
                                "sentences": large_info["sentences"], "words": large_info["words"]})
        specs, skipped, calibrations = row_specs(args, folder)
        rows = Rows(specs, args.threads)
        skipped.update({name: a["reason"] for name, a in rows.failed.items()})
        task = read_meta(args.model_dir).get("task", "ner")
        cells = []
        try:
            for c in corpora:
                for batch_size in c["batch_sizes"]:
                    log.info("%s, batch %d: %d rows", c["corpus"], batch_size, len(rows.conns))
                    large = c["gold"] is None
                    results = run_cell(rows, c["path"], batch_size, args.large_repeats if large else args.repeats,
                                       args.large_rows if large else None)
                    cell = {"corpus": c["corpus"], "batch_size": batch_size, "sentences": c["sentences"],
                            "words": c["words"], "scored": c["gold"] is not None,
                            "rows": summarise(results, c["gold"], task, c["words"])}
                    cell["verdict"] = verdict(cell)
                    cells.append(cell)
                    print(table(cell), flush=True)
        finally:
            rows.stop()
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {"command": "OMP_NUM_THREADS=" + str(os.environ.get("OMP_NUM_THREADS")) + " " + command_line(),
              "machine": info, "elapsed_s": round(time.perf_counter() - started, 1),
              "settings": {k: v for k, v in vars(args).items()},
              "load": {name: a for name, a in rows.ready.items()},
              "rows": [asdict(s) for s in specs], "skipped": skipped, "calibrations": calibrations,
              "large_corpus": large_info, "cells": cells}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), report)
    out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return report


def table(cell: dict) -> str:
    """A console table of one cell."""
    head = f"\n{cell['corpus']}, batch {cell['batch_size']}: {cell['words']} words\n"
    lines = [f"{'row':<22}{'words/s':>10}{'x ORT':>8}{'F1':>8}{'dF1':>8}{'peak MiB':>10}{'exit':>6}"]
    for e in cell["rows"]:
        if e["status"] != "ok":
            lines.append(f"{e['row']:<22} failed: {e['reason'][:100]}")
            continue
        cols = [e["x_ort_fp32"], e.get("f1", e.get("accuracy")), e["delta_score"], e["peak_rss_mib"],
                e["avg_exit_layer"]]
        x, score, delta, peak, layer = ("" if v is None else v for v in cols)
        lines.append(f"{e['row']:<22}{e['words_per_s']:>10.0f}{x:>8}{score:>8}{delta:>8}{peak:>10}{layer:>6}")
    v = cell.get("verdict")
    if v:
        lines.append(f"verdict: {v['row']} {v['x_ort_fp32']}x ORT fp32, {v['x_ort_int8'] or 'n/a'}x ORT int8, "
                     f"{v['x_fastest_other']}x {v['fastest_other']}: "
                     f"{v['verdict']}")
    return head + "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    main()
