"""The journal of an attempt as the SDK reads it: :class:`JournalEntry` and its
:class:`Waitpoint` (docs/protocol.md, "POST /engine/v1/worker/dequeue"; docs/architecture.md,
"Waits and checkpoints").

Each comes from one wire shape through one named constructor: the dequeued run's journal is
snake_case (``from_journal``/``from_wire``), the engine's HTTP answers are camelCase
(``from_api``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Waitpoint:
    """A waitpoint's state as the SDK needs it to wait."""

    id: str
    status: str
    output: str | None = None
    output_type: str | None = None
    is_error: bool = False

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Waitpoint:
        """The engine's HTTP answer (camelCase, docs/api.md)."""
        return cls(id=data["id"], status=str(data.get("status") or "WAITING"),
                   output=data.get("output"), output_type=data.get("outputType"),
                   is_error=bool(data.get("outputIsError")))

    @classmethod
    def from_journal(cls, data: Mapping[str, Any]) -> Waitpoint:
        """A journal entry's waitpoint in the dequeued run (snake_case, docs/protocol.md)."""
        return cls(id=data["id"], status=str(data.get("status") or "WAITING"),
                   output=data.get("output"), output_type=data.get("output_type"),
                   is_error=bool(data.get("output_is_error")))


@dataclass(frozen=True)
class JournalEntry:
    """One recorded durable operation of the attempt (docs/protocol.md, "POST
    /engine/v1/worker/dequeue": the run's ``journal``)."""

    seq: int
    kind: str
    key: str | None
    #: what the operation recorded (a child's ids, a token, a step's result)
    outcome: Any
    waitpoint: Waitpoint | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> JournalEntry:
        waitpoint = data.get("waitpoint")
        return cls(seq=int(data["seq"]), kind=data["kind"], key=data.get("key"),
                   outcome=data.get("outcome"),
                   waitpoint=None if not waitpoint else Waitpoint.from_journal(waitpoint))
