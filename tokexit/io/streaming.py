"""Tag a whole file in one streaming pass: records are read in chunks of ``chunk_sentences``, each chunk is tagged
(the tagger length-sorts its sentences into batches) and written back in input order, so memory stays flat however
large the file. A progress line on stderr gives sentences, words and words/s.

Resume (``resume=true``) and sharding (``torchrun``: chunk ``i`` goes to rank ``i % world``, rank 0 merges the
parts in input order after a barrier) are described in :mod:`tokexit.io.progress`. Torch-free: the tagger is a
function given by the caller (``tokexit.tag``), the barrier too.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tokexit.io.formats import FORMATS, Record, detect_format, format_record, output_format, read_records
from tokexit.io.progress import ProgressFile, ResumeError, check_fingerprint, file_identity, read_state, write_atomic

log = logging.getLogger("tokexit.tag")

#: sentences of words -> per sentence, its tags and each word's exit layer (``Tagger.predict``)
TagFunction = Callable[[list[list[str]]], list[tuple[list[str], list[int]]]]


@dataclass
class Shard:
    """This process's place among ``world`` processes (``rank`` 0 merges), and a barrier across them."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = field(default=lambda: None, repr=False)

    def owns(self, chunk: int) -> bool:
        return chunk % self.world == self.rank


class Meter:
    """Counts what was tagged and prints ``sentences, words, words/s`` to ``stream`` at most every ``every``
    seconds (and at the end)."""

    def __init__(self, prefix: str, every: float = 10.0, stream: TextIO | None = None):
        self.prefix, self.every, self.stream = prefix, every, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.sentences = self.words = 0  # tagged by this run
        self.resumed = (0, 0)  # sentences and words an interrupted run had written before (resume=true)

    def add(self, sentences: int, words: int) -> None:
        self.sentences += sentences
        self.words += words
        if time.perf_counter() - self.last >= self.every:
            self.report()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def report(self, final: bool = False) -> None:
        self.last = time.perf_counter()
        rate = self.words / max(self.seconds, 1e-9)  # of this run
        sentences, words = self.sentences + self.resumed[0], self.words + self.resumed[1]
        before = f" ({self.resumed[1]:,} words written before the resume)" if self.resumed[1] else ""
        print(f"{self.prefix}: {'done, ' if final else ''}{sentences:,} sentences, {words:,} words, "
              f"{rate:,.0f} words/s{before}", file=self.stream, flush=True)


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive chunks of ``size`` records (the last one shorter)."""
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def tag_chunk(tag: TagFunction, records: list[Record], out_format: str, exit_layer: bool) -> tuple[bytes, int, int]:
    """One chunk tagged and formatted: -> (its output bytes, sentences, words)."""
    words = [r.words for r in records if r.words is not None]
    results = tag(words)
    if len(results) != len(words):
        raise RuntimeError(f"the tagger returned {len(results)} sentences for {len(words)}")
    tagged = iter(results)
    text = []
    for record in records:
        tags, layers = next(tagged) if record.words is not None else (None, None)
        text.append(format_record(out_format, record, tags, layers, exit_layer))
    return "".join(text).encode("utf-8"), len(words), sum(map(len, words))


def check_request(input: str | os.PathLike, output: str | os.PathLike, format: str, chunk_sentences) -> None:
    """ValueError for what :func:`tag_file` cannot do whatever the file holds (checked before a model loads):
    a format that is not one, a chunk size below 1, the input as output."""
    if format not in ("auto", *FORMATS):
        raise ValueError(f"format={format} is not a format: give auto, {', '.join(FORMATS)}")
    if isinstance(chunk_sentences, bool) or not isinstance(chunk_sentences, int) or chunk_sentences < 1:
        raise ValueError(f"chunk_sentences={chunk_sentences} must be a whole number >= 1")
    if Path(output).resolve() == Path(input).resolve():
        raise ValueError(f"output={output} is the input file: write the tags to another file")


def tag_file(tag: TagFunction, input: str | os.PathLike, output: str | os.PathLike, *, format: str = "auto",
             chunk_sentences: int = 1000, exit_layer: bool = False, resume: bool = False,
             settings: dict | None = None, shard: Shard | None = None, progress_seconds: float = 10.0,
             stream: TextIO | None = None) -> dict:
    """Tag ``input`` into ``output`` with ``tag`` (see the module). ``settings``: what else decides the output
    (model, exit setting, batch size...), recorded so that a resume with other settings is refused. Returns a
    summary: format, sentences and words (of this process's output; after a resume, the whole file's), seconds and
    words/s (of this run), chunks (all, and those skipped on resume)."""
    input, output, shard = Path(input), Path(output), shard or Shard()
    if not input.is_file():
        raise FileNotFoundError(f"input={input}: no such file")
    check_request(input, output, format, chunk_sentences)
    fmt = detect_format(input) if format == "auto" else format
    if format == "auto" and shard.rank == 0:
        log.info("format=auto: reading %s as %s", input, fmt)
    fingerprint = {**(settings or {}), "input": file_identity(input), "format": fmt, "exit_layer": exit_layer,
                   "chunk_sentences": chunk_sentences, "world_size": shard.world}
    output.parent.mkdir(parents=True, exist_ok=True)
    prefix = "tokexit.tag" + (f" [rank {shard.rank}/{shard.world}]" if shard.world > 1 else "")
    meter = Meter(prefix, progress_seconds, stream)
    records = read_records(input, fmt)
    run = _tag_parts if shard.world > 1 else _tag_single
    chunks, skipped = run(tag, records, output, output_format(fmt), exit_layer, chunk_sentences, resume, fingerprint,
                          shard, meter)
    meter.report(final=True)
    return {"input": str(input), "output": str(output), "format": fmt, "output_format": output_format(fmt),
            "sentences": meter.sentences + meter.resumed[0], "words": meter.words + meter.resumed[1],
            "seconds": round(meter.seconds, 3),  # seconds and words/s: of this run
            "words_per_second": round(meter.words / meter.seconds, 1) if meter.seconds > 0 else None,
            "chunks": chunks, "chunks_resumed": skipped, "rank": shard.rank, "world_size": shard.world}


def _tag_single(tag: TagFunction, records: Iterator[Record], output: Path, out_format: str, exit_layer: bool,
                size: int, resume: bool, fingerprint: dict, shard: Shard, meter: Meter) -> tuple[int, int]:
    """One process: append chunk after chunk to ``output``, the progress record after each (see progress)."""
    progress = ProgressFile(output, fingerprint)
    state = progress.resume_point(output) if resume else None
    done = state["chunks_done"] if state else 0
    if resume:
        log.info("resume=true: %s", f"{done} chunks of {output} already written, continuing" if state else
                 f"no progress record ({progress.path}): starting from the beginning")
    chunks = 0
    with open(output, "r+b" if state else "wb") as f:
        if state:
            f.truncate(state["output_bytes"])  # drop what a killed run wrote after its last recorded chunk
            f.seek(state["output_bytes"])
        records_done = state["records_done"] if state else 0
        sentences, words = (state["sentences_done"], state["words_done"]) if state else (0, 0)
        meter.resumed = (sentences, words)
        for index, chunk in enumerate(chunked(records, size)):
            chunks = index + 1
            if index < done:
                continue
            data, n_sentences, n_words = tag_chunk(tag, chunk, out_format, exit_layer)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            records_done, sentences, words = records_done + len(chunk), sentences + n_sentences, words + n_words
            progress.save(chunks, records_done, sentences, words, f.tell())
            meter.add(n_sentences, n_words)
    if chunks < done:
        raise ResumeError(f"resume=true: {progress.path} records {done} chunks done but the input has {chunks}")
    progress.remove()
    return chunks, done


def _tag_parts(tag: TagFunction, records: Iterator[Record], output: Path, out_format: str, exit_layer: bool,
               size: int, resume: bool, fingerprint: dict, shard: Shard, meter: Meter) -> tuple[int, int]:
    """Several processes: each tags its chunks into files of ``OUTPUT.parts/``; rank 0 merges them in order."""
    parts = output.with_name(output.name + ".parts")
    record = parts / "fingerprint.json"
    if shard.rank == 0:
        if not resume and parts.exists():
            shutil.rmtree(parts)
        parts.mkdir(exist_ok=True)
        if not record.exists():
            write_atomic(record, json.dumps({"fingerprint": fingerprint}, indent=1))
    shard.barrier()
    check_fingerprint(read_state(record)["fingerprint"], fingerprint, parts)  # every rank refuses alike
    chunks = skipped = 0
    for index, chunk in enumerate(chunked(records, size)):
        chunks = index + 1
        if not shard.owns(index):
            continue
        part = parts / f"{index:09d}.part"
        if resume and part.exists():
            skipped += 1
            continue
        data, n_sentences, n_words = tag_chunk(tag, chunk, out_format, exit_layer)
        _write_bytes_atomic(part, data)
        meter.add(n_sentences, n_words)
    if resume and skipped:
        log.info("resume=true: rank %d skipped %d chunks already written", shard.rank, skipped)
    shard.barrier()
    if shard.rank == 0:
        _merge(parts, chunks, output)
    shard.barrier()
    return chunks, skipped


def _merge(parts: Path, chunks: int, output: Path) -> None:
    """Concatenate the ``chunks`` part files in order into ``output`` (whole, by rename), then remove ``parts``."""
    tmp = output.with_name(f".{output.name}.merging")
    with open(tmp, "wb") as out:
        for index in range(chunks):
            part = parts / f"{index:09d}.part"
            if not part.exists():
                raise RuntimeError(f"{part}: missing after every rank finished (chunk {index} of {chunks})")
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, output)
    shutil.rmtree(parts)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

