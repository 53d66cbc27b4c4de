"""What task definitions share with triggering: :class:`Queue` and :class:`TaskDefinitionError`.

Apart from worker/sdk/task.py so that triggering (which accepts a ``Queue`` as the ``queue``
option) does not import the task module, which imports triggering.
"""

from __future__ import annotations

from dataclasses import dataclass


class TaskDefinitionError(ValueError):
    """A task was declared with options that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Queue:
    """A named queue shared by the tasks that name it. ``concurrency_limit=None`` is unbounded."""

    name: str
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise TaskDefinitionError("queue name must be a non-empty string")
        limit = self.concurrency_limit
        if limit is not None and (not isinstance(limit, int) or not 0 <= limit <= 100_000):
            raise TaskDefinitionError(
                f"queue {self.name!r}: concurrency_limit must be an int in 0..100000 or None"
            )


def queue(name: str, concurrency_limit: int | None = None) -> Queue:
    return Queue(name, concurrency_limit)
