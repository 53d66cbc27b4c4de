"""Names every layer agrees on (the project layout and Trigger.dev's queue naming)."""

from __future__ import annotations

#: the project file that names the task folders and global hooks
CONFIG_FILE = "trigger_config.py"

#: a task without an explicit queue runs on its own queue, named after it
TASK_QUEUE_PREFIX = "task/"


def task_queue_name(task_id: str) -> str:
    """The default queue of ``task_id`` (Trigger.dev: ``task/<id>``)."""
    return f"{TASK_QUEUE_PREFIX}{task_id}"
