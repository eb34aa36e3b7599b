"""What a ``tokexit.tag`` run has done, kept beside its output so that a run killed half-way can resume.

One process: ``OUTPUT.progress.json`` holds the run's fingerprint (model files, input file, settings), the chunks
and records done and the output's size after the last chunk flushed; it is replaced atomically (temporary file,
fsync, rename) after every chunk, once the output itself is flushed and synced. On ``resume=true`` the output is
truncated to that size and the input's first records are skipped (read, not tagged). Several processes: every
chunk is a file of its own in ``OUTPUT.parts/`` (renamed into place whole), so a chunk file that exists is done;
``OUTPUT.parts/fingerprint.json`` says what the parts were made with. A fingerprint that differs refuses to resume.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class ResumeError(ValueError):
    """``resume=true`` cannot continue this output (other model, input or settings, or a damaged record)."""


def file_identity(path: str | os.PathLike) -> dict:
    """A file's resolved path, size and modification time: what says it is the same file as before."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` whole: a synced temporary file in the same directory, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(path: Path) -> dict:
    """A progress or fingerprint file (ResumeError naming it if it is damaged)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResumeError(f"{path}: damaged progress record ({error}); rerun without resume=true") from error
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise ResumeError(f"{path}: not a tokexit.tag progress record; rerun without resume=true")
    return state


def check_fingerprint(saved: dict, current: dict, what: Path) -> None:
    """ResumeError naming every setting that differs between the run that wrote ``what`` and this one."""
    if saved == current:
        return
    keys = sorted(set(saved) | set(current))
    changes = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    raise ResumeError(f"resume=true: {what} was made by a run with another model, input or settings "
                      f"({'; '.join(changes)}); rerun with the first run's settings, or without resume=true to "
                      "start over")


class ProgressFile:
    """The one-process progress record of an output file (see the module)."""

    def __init__(self, output: Path, fingerprint: dict):
        self.path = output.with_name(output.name + ".progress.json")
        self.fingerprint = fingerprint

    def resume_point(self, output: Path) -> dict | None:
        """The state to continue from (None: no record, start over); ResumeError if it cannot continue."""
        if not self.path.exists():
            return None
        state = read_state(self.path)
        check_fingerprint(state["fingerprint"], self.fingerprint, output)
        size = output.stat().st_size if output.exists() else -1
        if size < state["output_bytes"]:
            raise ResumeError(f"resume=true: {output} holds {max(size, 0)} bytes but {self.path} records "
                              f"{state['output_bytes']} written; rerun without resume=true to start over")
        return state

    def save(self, chunks: int, records: int, sentences: int, words: int, output_bytes: int) -> None:
        state = {"fingerprint": self.fingerprint, "chunks_done": chunks, "records_done": records,
                 "sentences_done": sentences, "words_done": words, "output_bytes": output_bytes}
        write_atomic(self.path, json.dumps(state, indent=1))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
