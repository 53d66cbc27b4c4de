// Drives trigger-worker's API with Trigger.dev's own SDK (@trigger.dev/sdk, pinned in
// package.json) and checks every response with the SDK's zod schemas (@trigger.dev/core).
//
// Env: TRIGGER_API_URL, TRIGGER_SECRET_KEY, PROJECT_REF. Prints one JSON line per SDK call
// ({"call", "ok", "error"}) and a final {"summary": {"ok", "total"}} line. Python tasks it
// triggers live in tests/compat/test_sdk_conformance.py.
import {
  auth,
  batch,
  configure,
  envvars,
  idempotencyKeys,
  queues,
  runs,
  schedules,
  tasks,
  wait,
} from "@trigger.dev/sdk";
import {
  ListRunResponse,
  QueueItem,
  RetrieveBatchV2Response,
  RetrieveRunResponse,
  WaitpointRetrieveTokenResponse,
} from "@trigger.dev/core/v3";

const baseURL = process.env.TRIGGER_API_URL;
const accessToken = process.env.TRIGGER_SECRET_KEY;
const projectRef = process.env.PROJECT_REF;
configure({ baseURL, accessToken, requestOptions: { retry: { maxAttempts: 1 } } });

const results = [];
const FINAL = ["COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "CANCELED", "EXPIRED", "TIMED_OUT"];

async function call(name, fn) {
  try {
    const value = await withTimeout(fn(), 60_000, name);
    results.push({ call: name, ok: true });
    console.log(JSON.stringify({ call: name, ok: true }));
    return value;
  } catch (error) {
    const message = String(error?.stack ?? error).slice(0, 1500);
    results.push({ call: name, ok: false, error: message });
    console.log(JSON.stringify({ call: name, ok: false, error: message }));
    return undefined;
  }
}

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Fetch raw JSON with the secret key and parse it with one of the SDK's schemas. */
async function raw(path, schema, token = accessToken) {
  const response = await fetch(`${baseURL}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  const text = await response.text();
  check(response.ok, `${path}: HTTP ${response.status} ${text}`);
  const body = JSON.parse(text);
  const parsed = schema.safeParse(body);
  check(parsed.success, `${path}: schema: ${parsed.error?.message}`);
  return parsed.data;
}

/** Statuses a realtime subscription sees until `done(statusesById)` or a timeout. */
async function collect(subscription, done, ms = 45_000) {
  const seen = {};
  const timer = setTimeout(() => subscription.unsubscribe(), ms);
  try {
    for await (const run of subscription) {
      (seen[run.id] ??= []);
      const list = seen[run.id];
      if (list[list.length - 1] !== run.status) list.push(run.status);
      if (done(seen)) break;
    }
  } finally {
    clearTimeout(timer);
    subscription.unsubscribe();
  }
  return seen;
}

const allFinal = (n) => (seen) =>
  Object.keys(seen).length >= n && Object.values(seen).every((s) => FINAL.includes(s[s.length - 1]));

const tag = `compat-${Date.now()}`;
const when = new Date("2024-02-03T04:05:06.789Z");

// --- trigger, retrieve, poll -------------------------------------------------------------
const handle = await call("tasks.trigger (every option)", async () => {
  const h = await tasks.trigger(
    "compat-echo",
    { name: "Ada", when, n: 3 },
    {
      tags: [tag, "compat-all"],
      metadata: { step: "start" },
      idempotencyKey: `${tag}-idem`,
      idempotencyKeyTTL: "10m",
      maxAttempts: 2,
      maxDuration: 60,
      machine: "small-1x",
      priority: 5,
      ttl: "10m",
      concurrencyKey: "user-1",
      queue: "compat-queue",
    }
  );
  check(h.id.startsWith("run_"), `id ${h.id}`);
  check(typeof h.publicAccessToken === "string", "no publicAccessToken");
  return h;
});

await call("runs.retrieve", async () => {
  const run = await runs.retrieve(handle.id);
  check(run.taskIdentifier === "compat-echo", "taskIdentifier");
  check(run.tags.includes(tag), "tags");
  check(run.payload?.name === "Ada", `payload ${JSON.stringify(run.payload)}`);
  await raw(`/api/v3/runs/${handle.id}`, RetrieveRunResponse);
});

await call("runs.poll", async () => {
  const run = await runs.poll(handle.id, { pollIntervalMs: 200 });
  check(run.status === "COMPLETED", `status ${run.status}`);
  check(run.isSuccess && !run.isCancelled, "booleans");
  check(run.output?.echo?.name === "Ada", `output ${JSON.stringify(run.output)}`);
  // the task got a datetime and returned it (SuperJSON Date both ways)
  check(run.output?.whenYear === 2024, `task saw ${JSON.stringify(run.output)}`);
  check(run.finishedAt instanceof Date && run.finishedAt.getFullYear() > 2000, "finishedAt");
  check(run.durationMs >= 0 && run.costInCents === 0, "durationMs/costInCents");
});

await call("runs.retrieve with the trigger's x-trigger-jwt", async () => {
  await auth.withAuth({ accessToken: handle.publicAccessToken }, async () => {
    const run = await runs.retrieve(handle.id);
    check(run.id === handle.id, "id");
  });
});

await call("runs.retrieve relatedRuns (a Python task's child)", async () => {
  const h = await tasks.trigger("compat-parent", {});
  const parent = await runs.poll(h.id, { pollIntervalMs: 200 });
  const childId = parent.output?.child;
  const child = await runs.retrieve(childId);
  check(child.depth === 1 && child.relatedRuns.parent?.id === h.id, JSON.stringify(child.relatedRuns));
  const again = await runs.retrieve(h.id);
  check(again.relatedRuns.children?.some((c) => c.id === childId), JSON.stringify(again.relatedRuns));
});

await call("tasks.trigger (idempotencyKey again → cached)", async () => {
  const again = await tasks.trigger("compat-echo", { name: "Other" }, { idempotencyKey: `${tag}-idem` });
  check(again.id === handle.id, `new run ${again.id} for a used key`);
});

await call("idempotencyKeys.create + reset", async () => {
  const key = await idempotencyKeys.create(`${tag}-k2`, { scope: "global" });
  const first = await tasks.trigger("compat-echo", { name: "k" }, { idempotencyKey: key });
  await runs.poll(first.id, { pollIntervalMs: 200 });
  await idempotencyKeys.reset("compat-echo", key);
  const second = await tasks.trigger("compat-echo", { name: "k" }, { idempotencyKey: key });
  check(second.id !== first.id, "reset key still cached");
});

// --- list ---------------------------------------------------------------------------------
await call("runs.list (filters, for await paging)", async () => {
  const ids = [];
  for (let i = 0; i < 3; i++) {
    ids.push((await tasks.trigger("compat-echo", { i }, { tags: [`${tag}-list-${i % 2}`] })).id);
  }
  for (const id of ids) await runs.poll(id, { pollIntervalMs: 200 });
  const seen = [];
  for await (const run of runs.list({
    tag: [`${tag}-list-0`, `${tag}-list-1`],
    status: ["COMPLETED", "FAILED"],
    taskIdentifier: ["compat-echo", "compat-none"],
    from: new Date(Date.now() - 3600_000),
    to: new Date(Date.now() + 60_000),
    limit: 2,
  })) {
    check(run.env?.name, "env on list item");
    seen.push(run.id);
  }
  check(seen.length === 3 && ids.every((id) => seen.includes(id)), `listed ${seen} want ${ids}`);
  await raw(`/api/v1/runs?page[size]=2&filter[tag]=${tag}-list-0,${tag}-list-1`, ListRunResponse);
});

// --- delayed: reschedule, cancel, replay ----------------------------------------------------
await call("runs.reschedule", async () => {
  const delayed = await tasks.trigger("compat-echo", { d: 1 }, { delay: "1h" });
  const run = await runs.reschedule(delayed.id, { delay: "2h" });
  check(run.status === "DELAYED" && run.delayedUntil > new Date(Date.now() + 3600_000), "delayedUntil");
  globalThis.delayedId = delayed.id;
});

await call("runs.cancel", async () => {
  await runs.cancel(globalThis.delayedId);
  const run = await runs.retrieve(globalThis.delayedId);
  check(run.status === "CANCELED" && run.isCancelled, `status ${run.status}`);
});

await call("runs.replay", async () => {
  const replayed = await runs.replay(handle.id);
  const run = await runs.poll(replayed.id, { pollIntervalMs: 200 });
  check(run.status === "COMPLETED" && run.payload?.name === "Ada", `replay ${run.status}`);
});

// --- batches ------------------------------------------------------------------------------
const batchHandle = await call("batch.trigger (two-phase)", async () => {
  const b = await batch.trigger([
    { id: "compat-echo", payload: { b: 1 } },
    { id: "compat-slow", payload: { b: 2 } },
  ]);
  check(b.runCount === 2, `runCount ${b.runCount}`);
  return b;
});

await call("tasks.batchTrigger", async () => {
  const b = await tasks.batchTrigger("compat-echo", [{ payload: { x: 1 } }, { payload: { x: 2 } }]);
  check(b.runCount === 2, "runCount");
  const got = await batch.retrieve(b.batchId ?? b.id);
  check(got.runs.length === 2, `runs ${got.runs}`);
});

await call("runs.subscribeToBatch (every status to final)", async () => {
  const token = await auth.createPublicToken({ scopes: { read: { batch: batchHandle.batchId } } });
  await auth.withAuth({ accessToken: token }, async () => {
    const seen = await collect(runs.subscribeToBatch(batchHandle.batchId), allFinal(2));
    check(Object.keys(seen).length === 2, `saw ${JSON.stringify(seen)}`);
    for (const statuses of Object.values(seen)) {
      check(statuses[statuses.length - 1] === "COMPLETED", `saw ${JSON.stringify(seen)}`);
    }
  });
});

await call("batch.retrieve", async () => {
  const got = await batch.retrieve(batchHandle.batchId);
  check(got.runCount === 2 && got.runs.length === 2, `batch ${JSON.stringify(got)}`);
  await raw(`/api/v2/batches/${batchHandle.batchId}`, RetrieveBatchV2Response);
});

// --- realtime -----------------------------------------------------------------------------
await call("auth.createPublicToken + runs.subscribeToRun (every status)", async () => {
  // delayed, so the subscription is open before anything happens to the run
  const h = await tasks.trigger("compat-slow", { s: 1 }, { delay: "2s" });
  const token = await auth.createPublicToken({ scopes: { read: { runs: [h.id] } } });
  await auth.withAuth({ accessToken: token }, async () => {
    const seen = await collect(runs.subscribeToRun(h.id), allFinal(1));
    const statuses = (seen[h.id] ?? []).join(",");
    check(statuses === "DELAYED,QUEUED,EXECUTING,COMPLETED", `saw ${statuses}`);
  });
});

await call("runs.subscribeToRunsWithTag", async () => {
  const rtTag = `${tag}-rt`;
  // a finished run with the tag first: the subscription's snapshot shows it, so the
  // subscription is live before the runs whose every status it must see are triggered (a run
  // triggered before the snapshot is read shows in it as it is by then)
  const marker = await tasks.trigger("compat-echo", { t: 0 }, { tags: [rtTag] });
  await runs.poll(marker.id, { pollIntervalMs: 100 });
  const subscription = runs.subscribeToRunsWithTag(rtTag);
  let live;
  const opened = new Promise((resolve) => (live = resolve));
  const pending = collect(subscription, (seen) => {
    if (seen[marker.id]) live();
    return allFinal(3)(seen);
  });
  await opened;
  await tasks.trigger("compat-slow", { t: 1 }, { tags: [rtTag] });
  await tasks.trigger("compat-echo", { t: 2 }, { tags: [rtTag] });
  const seen = await pending;
  delete seen[marker.id];
  check(Object.keys(seen).length === 2, `saw ${JSON.stringify(seen)}`);
  const every = Object.values(seen).every((s) => s.join(",") === "QUEUED,EXECUTING,COMPLETED");
  check(every, `saw ${JSON.stringify(seen)}`);
});

// --- waitpoint tokens ---------------------------------------------------------------------
await call("wait.createToken / retrieveToken / listTokens / completeToken", async () => {
  const token = await wait.createToken({ timeout: "1h", tags: [tag] });
  check(token.url && token.publicAccessToken, "url / publicAccessToken");
  const waiting = await tasks.trigger("compat-wait-token", { token: token.id });
  const before = await wait.retrieveToken(token.id);
  check(before.status === "WAITING", `status ${before.status}`);
  await raw(`/api/v1/waitpoints/tokens/${token.id}`, WaitpointRetrieveTokenResponse);
  let listed = 0;
  for await (const item of wait.listTokens({ tags: [tag] })) {
    if (item.id === token.id) listed++;
  }
  check(listed === 1, "listTokens");
  await wait.completeToken(token.id, { approved: true });
  const after = await wait.retrieveToken(token.id);
  check(after.status === "COMPLETED" && after.output?.approved === true, JSON.stringify(after));
  const run = await runs.poll(waiting.id, { pollIntervalMs: 200 });
  check(run.output?.approved === true, `run output ${JSON.stringify(run.output)}`);
});

await call("waitpoint token callback URL", async () => {
  const token = await wait.createToken({ timeout: "1h" });
  const response = await fetch(token.url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ via: "callback" }),
  });
  check(response.ok, `callback HTTP ${response.status}`);
  const after = await wait.retrieveToken(token.id);
  check(after.status === "COMPLETED" && after.output?.via === "callback", JSON.stringify(after));
});

// --- schedules ----------------------------------------------------------------------------
await call("schedules.create / retrieve / list / update / deactivate / activate / del", async () => {
  const created = await schedules.create({
    task: "compat-scheduled",
    cron: "0 * * * *",
    deduplicationKey: `${tag}-sched`,
    externalId: "user-1",
    timezone: "Europe/Paris",
  });
  check((await schedules.retrieve(created.id)).id === created.id, "retrieve");
  const page = await schedules.list({ perPage: 5 });
  check(page.data.length >= 1, "list");
  const updated = await schedules.update(created.id, { task: "compat-scheduled", cron: "*/5 * * * *" });
  check(updated.generator.expression === "*/5 * * * *", "update");
  check(!(await schedules.deactivate(created.id)).active, "deactivate");
  check((await schedules.activate(created.id)).active, "activate");
  await schedules.del(created.id);
});

await call("schedules.timezones", async () => {
  const { timezones } = await schedules.timezones();
  check(timezones.includes("Europe/Paris"), "timezones");
});

// --- queues -------------------------------------------------------------------------------
await call("queues.list / retrieve / pause / resume / override / reset", async () => {
  const page = await queues.list();
  check(page.data.length >= 1, "list");
  const byName = await queues.retrieve({ type: "task", name: "compat-echo" });
  check(byName.name === "compat-echo" && byName.type === "task", JSON.stringify(byName));
  await raw(`/api/v1/queues/${byName.id}?type=id`, QueueItem);
  // by id: the SDK encodes the "/" of "task/compat-echo" twice
  check((await queues.retrieve(byName.id)).id === byName.id, "retrieve by id");
  check((await queues.pause({ type: "task", name: "compat-echo" })).paused, "pause");
  check(!(await queues.resume({ type: "task", name: "compat-echo" })).paused, "resume");
  const overridden = await queues.overrideConcurrencyLimit({ type: "custom", name: "compat-queue" }, 3);
  check(overridden.concurrencyLimit === 3, JSON.stringify(overridden));
  await queues.resetConcurrencyLimit({ type: "custom", name: "compat-queue" });
});

// --- environment variables ----------------------------------------------------------------
await call("envvars.create / list / retrieve / update / del + task sees it", async () => {
  const name = "COMPAT_GREETING";
  await envvars.create(projectRef, "dev", { name, value: "hello" });
  check((await envvars.list(projectRef, "dev")).some((v) => v.name === name), "list");
  check((await envvars.retrieve(projectRef, "dev", name)).value === "hello", "retrieve");
  // SDK 4.8.3 bug: outside a task, envvars.update reads a global `name` instead of its
  // argument (`$name = name` in envvars.js); give it that global so the call reaches us.
  globalThis.name = name;
  await envvars.update(projectRef, "dev", name, { value: "bonjour" });
  const h = await tasks.trigger("compat-env", { name });
  const run = await runs.poll(h.id, { pollIntervalMs: 200 });
  check(run.output?.value === "bonjour", `task saw ${JSON.stringify(run.output)}`);
  await envvars.del(projectRef, "dev", name);
});

const ok = results.filter((r) => r.ok).length;
console.log(JSON.stringify({ summary: { ok, total: results.length } }));
process.exit(0);
