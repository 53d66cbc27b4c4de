"""Checked by ``mypy --strict`` in tests/sdk/test_typing.py, never run: the public generics
carry a task's payload and output types through triggering and waiting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

from worker import BatchHandle, RunHandle, Task, TaskRunResult, task
from worker.sdk.subtasks import BatchResult


@dataclass
class Order:
    sku: str
    quantity: int


@dataclass
class Receipt:
    total: float


@task(id="checkout")
async def checkout(payload: Order) -> Receipt:
    return Receipt(total=payload.quantity * 9.5)


@task(id="count")
def count(payload: list[str]) -> int:
    return len(payload)


async def parent() -> None:
    assert_type(checkout, Task[Order, Receipt])
    assert_type(count, Task[list[str], int])

    handle = await checkout.trigger(Order("a", 2))
    assert_type(handle, RunHandle[Receipt])
    assert_type(handle.id, str)

    result = await checkout.trigger_and_wait(Order("a", 2))
    assert_type(result, TaskRunResult[Receipt])
    assert_type(result.unwrap(), Receipt)
    assert_type(result.unwrap().total, float)

    batch = await count.batch_trigger([["a"], ["b", "c"]])
    assert_type(batch, BatchHandle[int])
    waited = await count.batch_trigger_and_wait([["a"]])
    assert_type(waited, BatchResult[int])
    assert_type(waited.unwrap(), list[int])
    assert_type([r.output for r in waited], list[int])


async def wrong_payload() -> None:
    await checkout.trigger("not an order")  # type: ignore[arg-type]
