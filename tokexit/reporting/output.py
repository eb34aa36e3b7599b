"""Tables and JSON files that every entry point writes the same way."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def layer_table(scores: list[dict], metric: str, title: str = "") -> str:
    """A per-exit-layer text table: layer, main metric, and the other scores."""
    keys = [metric] + [k for k in scores[0] if k != metric] if scores else [metric]
    lines = [title] if title else []
    lines.append("layer  " + "  ".join(f"{k:>9}" for k in keys))
    for i, s in enumerate(scores, start=1):
        lines.append(f"{i:>5}  " + "  ".join(f"{s[k]:9.2f}" for k in keys))
    return "\n".join(lines)


def command_line() -> str:
    """The command that is running, as it could be typed again."""
    module = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", module.name] if module is not None else ["python", sys.argv[0]]
    return " ".join(shlex.quote(a) for a in head + sys.argv[1:])


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
