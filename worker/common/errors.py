"""Error codes carried in a failed attempt and what each means for the run
(docs/triggerdev-semantics.md, "Error codes").

The wire form of an error (``TaskRunError``) is a dict:
``{"type": "BUILT_IN_ERROR", "name", "message", "stackTrace"}``,
``{"type": "STRING_ERROR", "raw"}`` or
``{"type": "INTERNAL_ERROR", "code", "message", "stackTrace"}``.
"""

from __future__ import annotations

from typing import Any

# Internal error codes used by this implementation.
TASK_RUN_CANCELLED = "TASK_RUN_CANCELLED"
MAX_DURATION_EXCEEDED = "MAX_DURATION_EXCEEDED"
TASK_INPUT_ERROR = "TASK_INPUT_ERROR"
TASK_OUTPUT_ERROR = "TASK_OUTPUT_ERROR"
TASK_MIDDLEWARE_ERROR = "TASK_MIDDLEWARE_ERROR"
HANDLE_ERROR_ERROR = "HANDLE_ERROR_ERROR"
TASK_RUN_STALLED_EXECUTING = "TASK_RUN_STALLED_EXECUTING"
TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE = "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE"
TASK_PROCESS_SIGKILL = "TASK_PROCESS_SIGKILL_TIMEOUT"
TASK_PROCESS_SIGSEGV = "TASK_PROCESS_SIGSEGV"
TASK_PROCESS_SIGTERM = "TASK_PROCESS_SIGTERM"
TASK_PROCESS_OOM_KILLED = "TASK_PROCESS_OOM_KILLED"
TASK_RUN_UNCAUGHT_EXCEPTION = "TASK_RUN_UNCAUGHT_EXCEPTION"
COULD_NOT_FIND_TASK = "COULD_NOT_FIND_TASK"
TASK_RUN_CRASHED = "TASK_RUN_CRASHED"

#: Codes whose attempt is retried by the engine from the run's locked retry config, even when
#: the worker sent no retry decision (the process died before it could decide).
LOOKUP_RETRY_CODES = frozenset(
    {
        TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE,
        TASK_PROCESS_SIGTERM,
        TASK_PROCESS_SIGSEGV,
        TASK_RUN_UNCAUGHT_EXCEPTION,
        TASK_MIDDLEWARE_ERROR,
        TASK_RUN_STALLED_EXECUTING,
        TASK_RUN_CRASHED,
    }
)

#: Final internal run status for a permanently failed attempt, by error code.
_FINAL_STATUS_BY_CODE = {
    TASK_RUN_CANCELLED: "CANCELED",
    MAX_DURATION_EXCEEDED: "TIMED_OUT",
    TASK_PROCESS_OOM_KILLED: "CRASHED",
    TASK_PROCESS_SIGSEGV: "CRASHED",
    TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE: "CRASHED",
    TASK_RUN_CRASHED: "CRASHED",
    HANDLE_ERROR_ERROR: "CRASHED",
    TASK_PROCESS_SIGTERM: "SYSTEM_FAILURE",
    TASK_PROCESS_SIGKILL: "SYSTEM_FAILURE",
    COULD_NOT_FIND_TASK: "SYSTEM_FAILURE",
}

#: Codes that never retry, whatever the worker asked for.
NON_RETRYABLE_CODES = frozenset(
    {
        TASK_RUN_CANCELLED,
        MAX_DURATION_EXCEEDED,
        TASK_INPUT_ERROR,
        TASK_OUTPUT_ERROR,
        HANDLE_ERROR_ERROR,
        TASK_PROCESS_SIGKILL,
        COULD_NOT_FIND_TASK,
        TASK_PROCESS_OOM_KILLED,
    }
)


def error_code(error: dict[str, Any]) -> str | None:
    """The internal code of a wire error, or None for a user error."""
    return error.get("code") if error.get("type") == "INTERNAL_ERROR" else None


def final_status_for(error: dict[str, Any]) -> str:
    """Internal run status of a run that failed for good with ``error``."""
    code = error_code(error)
    if code is None:
        return "COMPLETED_WITH_ERRORS"
    return _FINAL_STATUS_BY_CODE.get(code, "COMPLETED_WITH_ERRORS")


def internal_error(code: str, message: str = "", stack: str = "") -> dict[str, Any]:
    return {"type": "INTERNAL_ERROR", "code": code, "message": message, "stackTrace": stack}
