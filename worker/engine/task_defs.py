"""Task definitions cached per API process, for the plain trigger's one round trip
(engine/triggering.py).

A trigger needs its task's definition in Python before it inserts (the payload schema, the
default queue, the TTL). Read from the database, that is a round trip of its own before the
insert's; cached here, the insert, its hand-off lease and the commit go in one pipeline.

Two things keep a cached definition honest:

- every write of a ``tasks`` row notifies channel ``trigger_tasks`` with its environment id
  (migration 0015), and each process drops that environment's entries when it hears it; while
  the listening connection is down the cache is not used at all (as the key cache,
  worker/api/auth.py, and the env-vars cache, engine/env_vars.py);
- each entry keeps the row's ``xmin`` (its ``stamp``), and the trigger's insert happens only if
  the row still has it (``insert_cached_run``): a trigger that raced a registration whose
  notification it has not heard yet inserts nothing, drops the entry and goes the long way.
  A definition registered or promoted is therefore seen by the very next trigger, in every
  process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from worker.engine.notifier import Listener

#: the channel of changes (payload: the environment id)
CHANNEL = "trigger_tasks"
#: a bound on how long an unused entry is kept (the stamp check makes it safe either way)
CACHE_SECONDS = 30.0
#: environments kept at most (bounded memory under many environments)
MAX_ENVIRONMENTS = 10_000


@dataclass(frozen=True, slots=True)
class CachedTask:
    definition: dict[str, Any]
    #: the tasks row's xmin when it was read: the insert checks it is still the current row
    stamp: str


class TaskDefinitions:
    """Definitions by environment and task, for this process; an environment's entries are
    dropped on its ``trigger_tasks`` notifications (:meth:`listener`, given to the engine's
    notifier)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, dict[str, CachedTask]]] = {}
        #: bumped by every drop: a read that raced a change is not cached
        self.generation = 0
        self.listening = False

    def listener(self) -> Listener:
        return Listener(on_note=self.drop, on_up=self._up, on_down=self._down)

    def get(self, env_id: str, task_id: str) -> CachedTask | None:
        if not self.listening:
            return None
        hit = self._entries.get(env_id)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._entries[env_id]
            return None
        return hit[1].get(task_id)

    def put(self, generation: int, env_id: str, tasks: dict[str, CachedTask]) -> None:
        """Cache what was read while the cache was at ``generation`` (not if it moved on)."""
        if not self.listening or generation != self.generation or not tasks:
            return
        hit = self._entries.get(env_id)
        if hit is None:
            if len(self._entries) >= MAX_ENVIRONMENTS:
                self._entries.clear()
            self._entries[env_id] = (time.monotonic() + CACHE_SECONDS, dict(tasks))
        else:
            hit[1].update(tasks)

    def drop(self, env_id: str) -> None:
        self.generation += 1
        self._entries.pop(env_id, None)

    def _up(self) -> None:  # changes may have been missed while not listening
        self.generation += 1
        self._entries.clear()
        self.listening = True

    def _down(self) -> None:
        self.generation += 1
        self.listening = False
