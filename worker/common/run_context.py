"""The context of a dequeued run (docs/protocol.md, ``ctx``): what a task sees as ``ctx``.

Part of the worker protocol's messages; import them from :mod:`worker.common.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

#: a JSON object as it crosses the wire (its keys are documented in docs/protocol.md)
Wire = dict[str, Any]


def opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class EnvironmentInfo:
    id: str
    slug: str
    type: str

    def to_wire(self) -> Wire:
        return {"id": self.id, "slug": self.slug, "type": self.type}

    @classmethod
    def from_wire(cls, data: Wire) -> EnvironmentInfo:
        return cls(str(data["id"]), str(data["slug"]), str(data["type"]))


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    ref: str

    def to_wire(self) -> Wire:
        return {"id": self.id, "ref": self.ref}

    @classmethod
    def from_wire(cls, data: Wire) -> ProjectInfo:
        return cls(str(data["id"]), str(data["ref"]))


@dataclass(frozen=True, slots=True)
class RunInfo:
    """``ctx.run``."""

    id: str
    tags: list[str]
    created_at: str | None
    started_at: str | None
    idempotency_key: str | None
    max_attempts: int | None
    version: str
    max_duration: float | None
    priority: int
    is_test: bool
    parent_task_run_id: str | None
    root_task_run_id: str | None
    #: the run's metadata (any JSON value); None when it cannot be rendered
    metadata: object = None

    def to_wire(self) -> Wire:
        return {"id": self.id, "tags": self.tags, "created_at": self.created_at,
                "started_at": self.started_at, "idempotency_key": self.idempotency_key,
                "max_attempts": self.max_attempts, "version": self.version,
                "max_duration": self.max_duration, "priority": self.priority,
                "is_test": self.is_test, "parent_task_run_id": self.parent_task_run_id,
                "root_task_run_id": self.root_task_run_id, "metadata": self.metadata}

    @classmethod
    def from_wire(cls, data: Wire) -> RunInfo:
        return _build_run_info(
            str(data["id"]), list(data.get("tags") or []), data.get("created_at"),
            data.get("started_at"), data.get("idempotency_key"), data.get("max_attempts"),
            str(data.get("version") or ""), data.get("max_duration"),
            int(data.get("priority") or 0), bool(data.get("is_test")),
            data.get("parent_task_run_id"), data.get("root_task_run_id"), data.get("metadata"))


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    number: int
    started_at: str | None

    def to_wire(self) -> Wire:
        return {"number": self.number, "started_at": self.started_at}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    id: str
    file_path: str | None

    def to_wire(self) -> Wire:
        return {"id": self.id, "file_path": self.file_path}


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """``ctx.machine``: the preset's name, vCPUs and GiB (none for an unknown name)."""

    name: str
    cpu: float | None = None
    memory: float | None = None

    @classmethod
    def preset(cls, name: str) -> MachineInfo:
        from worker.common.machines import MACHINE_PRESETS

        spec = MACHINE_PRESETS.get(name)
        return cls(name, spec["cpu"], spec["memory"]) if spec else cls(name)

    def to_wire(self) -> Wire:
        if self.cpu is None:
            return {"name": self.name}
        return {"name": self.name, "cpu": self.cpu, "memory": self.memory}


@dataclass(frozen=True, slots=True)
class RunContext:
    """``ctx`` of a dequeued run: what the task sees as ``ctx`` (worker.sdk.context)."""

    run: RunInfo
    attempt: AttemptInfo
    task: TaskInfo
    queue: str
    environment: EnvironmentInfo
    project: ProjectInfo
    machine: MachineInfo
    batch_id: str | None = None
    #: the instance holding the lease, for durable operations (worker.sdk.durable); None
    #: outside a worker (worker.testing), where the keys ``worker`` and ``journal`` are absent
    worker_instance_id: str | None = None
    journal: list[Wire] = field(default_factory=list)

    def to_wire(self) -> Wire:
        wire: Wire = {
            "run": self.run.to_wire(), "attempt": self.attempt.to_wire(),
            "task": self.task.to_wire(), "queue": {"name": self.queue},
            "environment": self.environment.to_wire(), "project": self.project.to_wire(),
            "machine": self.machine.to_wire(),
            "batch": {"id": self.batch_id} if self.batch_id else None,
        }
        if self.worker_instance_id is not None:
            wire["worker"] = {"instance_id": self.worker_instance_id}
            wire["journal"] = self.journal
        return wire

    @classmethod
    def from_wire(cls, data: Wire) -> RunContext:
        machine = data.get("machine") or {}
        worker = data.get("worker")
        environment, project, task = data["environment"], data["project"], data["task"]
        return _build_run_context(
            RunInfo.from_wire(data["run"]),
            _build_attempt_info(int(data["attempt"]["number"]),
                                data["attempt"].get("started_at")),
            # the same from run to run of an executor: shared (immutable), not built again
            _shared(TaskInfo, str(task["id"]), task.get("file_path")),
            str((data.get("queue") or {}).get("name") or ""),
            _shared(EnvironmentInfo, str(environment["id"]), str(environment["slug"]),
                    str(environment["type"])),
            _shared(ProjectInfo, str(project["id"]), str(project["ref"])),
            _shared(MachineInfo, str(machine.get("name") or ""), machine.get("cpu"),
                    machine.get("memory")),
            opt_str((data.get("batch") or {}).get("id")),
            opt_str(worker.get("instance_id")) if worker else None,
            list(data.get("journal") or []),
        )


def frozen_builder(cls: type[_T]) -> Callable[..., _T]:
    """A faster constructor of the frozen dataclass ``cls``, taking every field positionally.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: ~7 times
    the cost of a plain one, and reading a ``ctx`` builds ~30 fields (on every run an executor
    starts, and every run the supervisor leases). The builder makes the object as a plain
    dataclass with the same slots, then gives it its class: the same object as ``cls(...)``
    (equal, hashable, frozen)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    twin = make_dataclass(f"_{cls.__name__}Builder", names, slots=True)

    def build(*values: object) -> _T:
        obj = twin(*values)
        obj.__class__ = cls
        return obj

    return build


_build_run_info = frozen_builder(RunInfo)
_build_attempt_info = frozen_builder(AttemptInfo)
_build_run_context = frozen_builder(RunContext)

#: the parts of ``ctx`` that repeat from run to run (its task, environment, project, machine),
#: by their values: building these frozen objects anew was most of reading a ``ctx``
_SHARED: dict[tuple[object, ...], object] = {}
_SHARED_MAX = 512


def _shared(cls: type[_T], *values: object) -> _T:
    key = (cls, *values)
    try:
        found = _SHARED.get(key)
    except TypeError:  # an unhashable value (not from our API): not shared
        return cls(*values)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _SHARED[key] = cls(*values)
    return found  # type: ignore[return-value]
