"""Run statuses: the internal ones the engine stores and the user-visible ones the API shows.

Mirrors Trigger.dev v4 (docs/triggerdev-semantics.md, "Statuses"). See docs/run-states.md for the
state machine.
"""

from __future__ import annotations

#: internal status -> API status
API_STATUS = {
    "DELAYED": "DELAYED",
    "PENDING_VERSION": "PENDING_VERSION",
    "PENDING": "QUEUED",
    "EXECUTING": "EXECUTING",
    "RETRYING_AFTER_FAILURE": "EXECUTING",
    "WAITING_TO_RESUME": "WAITING",
    "COMPLETED_SUCCESSFULLY": "COMPLETED",
    "COMPLETED_WITH_ERRORS": "FAILED",
    "CRASHED": "CRASHED",
    "SYSTEM_FAILURE": "SYSTEM_FAILURE",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "TIMED_OUT": "TIMED_OUT",
}

FINAL_STATUSES = frozenset(
    {
        "COMPLETED_SUCCESSFULLY",
        "COMPLETED_WITH_ERRORS",
        "CRASHED",
        "SYSTEM_FAILURE",
        "CANCELED",
        "EXPIRED",
        "TIMED_OUT",
    }
)

API_FINAL_STATUSES = frozenset(API_STATUS[s] for s in FINAL_STATUSES)

#: API status -> the internal statuses it stands for (for list filters)
INTERNAL_STATUSES: dict[str, list[str]] = {}
for _internal, _api in API_STATUS.items():
    INTERNAL_STATUSES.setdefault(_api, []).append(_internal)
