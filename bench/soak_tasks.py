"""The soak's tasks (bench/soak.py writes this file into its project). Each writes a side-effect
ledger (table soak_ledger, in the soak's own database) so the checks do not trust the engine."""

TASKS = '''
import os, time, asyncio
import psycopg
from worker import task, queue, wait, step, schedules

LEDGER = os.environ["SOAK_LEDGER_URL"]
RETRY = {"max_attempts": 6, "min_timeout_ms": 100, "max_timeout_ms": 500, "factor": 2}
limited_queue = queue("soak-limited", concurrency_limit=2)


def ledger(ctx, kind, key="", started=None):
    with psycopg.connect(LEDGER, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO soak_ledger (run_id, attempt, kind, key, started_at, ended_at, pid) "
            "VALUES (%s, %s, %s, %s, coalesce(%s, clock_timestamp()), clock_timestamp(), %s)",
            (ctx.run.id, ctx.attempt.number, kind, key, started, os.getpid()))


@task(id="plain", retry=RETRY)
async def plain(payload, ctx):
    time.sleep(0.05)
    ledger(ctx, "done")
    return payload


@task(id="flaky", retry=RETRY)
async def flaky(payload, ctx):
    if ctx.attempt.number == 1:
        raise RuntimeError("the first attempt fails")
    ledger(ctx, "done")
    return ctx.attempt.number


@task(id="limited", queue=limited_queue, retry=RETRY)
async def limited(payload, ctx):
    with psycopg.connect(LEDGER, autocommit=True) as conn:
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    time.sleep(0.3)
    ledger(ctx, "limited", started=started)
    return "ok"


@task(id="stepper", retry=RETRY)
async def stepper(payload, ctx):
    first = await step("effect", lambda: ledger(ctx, "effect", "effect") or 1)
    await wait.for_(seconds=1)
    second = await step("effect2", lambda: ledger(ctx, "effect", "effect2") or 2)
    return first + second


@task(id="waiter", retry=RETRY)
async def waiter(payload, ctx):
    token = await wait.create_token(timeout="20s", tags=["soak"])
    result = await wait.for_token(token)
    ledger(ctx, "done")
    return result.ok


@task(id="child", retry=RETRY)
async def child(payload, ctx):
    time.sleep(0.05)
    ledger(ctx, "done")
    return payload


@task(id="parent", retry=RETRY)
async def parent(payload, ctx):
    one = (await child.trigger_and_wait({"n": 1})).unwrap()
    many = await child.batch_trigger_and_wait([{"n": 2}, {"n": 3}])
    ledger(ctx, "done")
    return [one, *[r.unwrap() for r in many.runs]]


@schedules.task(id="ticker", retry=RETRY)
async def ticker(payload, ctx):
    ledger(ctx, "tick")
    return "tick"
'''
