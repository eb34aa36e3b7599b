"""The tasks tokexit trains and runs, behind one interface (:class:`~tokexit.tasks.base.Task`): token tagging
(:class:`~tokexit.tasks.tagging.Tagging`) and sentence(-pair) classification
(:class:`~tokexit.tasks.classification.Classification`). A new kind of model is a new task class here."""

from __future__ import annotations

from tokexit.backbones import ModelFormatError
from tokexit.tasks.base import EvalFile, Task
from tokexit.tasks.classification import Classification
from tokexit.tasks.tagging import Tagging

TASKS: dict[str, type] = {task.kind: task for task in (Tagging, Classification)}


def task_from_meta(meta: dict, where: str = "tokexit.json") -> Task:
    """The task of a saved model, by the ``kind`` of its tokexit.json (older taggers have none)."""
    kind = meta.get("kind", Tagging.kind)
    if kind not in TASKS:
        raise ModelFormatError(f"{where}: unknown kind '{kind}' (one of {', '.join(TASKS)})")
    try:
        return TASKS[kind].from_meta(meta)
    except (KeyError, TypeError, ValueError) as error:
        missing = f"no '{error.args[0]}' entry" if isinstance(error, KeyError) else str(error)
        raise ModelFormatError(f"{where}: not a valid {kind} model description: {missing}") from error


def task_for(labels) -> Task:
    """The task whose data side ``labels`` is (what a data module's ``prepare`` returns)."""
    for task in TASKS.values():
        if isinstance(labels, task.labels_type):
            return task(labels)
    raise TypeError(f"no tokexit task takes {type(labels).__name__} labels")


__all__ = ["TASKS", "Classification", "EvalFile", "Tagging", "Task", "task_for", "task_from_meta"]
