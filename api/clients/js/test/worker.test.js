// worker.test.js: the JS client's rounds helpers (contribute, Worker,
// params({ minStep, wait })) against a real optd, workers as concurrent
// async loops (each with its own Client, so its own connections).
//
//   OPTD_URL=http://127.0.0.1:PORT node --test api/clients/js/test/
//
// Without OPTD_URL a daemon is started from OPTD_BIN (default build/optd):
// test/daemon.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useDaemon } from "./daemon.js";
import { Client, OptdError, Worker } from "../optd.js";

const d = useDaemon();
let counter = 0;
const uname = (p = "jsw") => `${p}-${process.pid}-${++counter}`;

const client = () => new Client(d.base, { token: d.token, timeoutMs: 10000 });
const gradOf = (rank, step, size) => Array.from({ length: size }, (_, i) => (rank + 1) * 0.25 + step * 0.125 + i * 0.5);

test("rounds of 4 workers are the plain steps of the mean gradient", async () => {
  const c = client();
  const n = uname();
  const twin = uname();
  const start = [0.5, -1, 2];
  const d = await c.create(n, "sgd", { params: start, hyperparameters: { lr: 0.25 }, aggregate: { workers: 4 } });
  assert.equal(d.aggregate.workers, 4);
  await c.create(twin, "sgd", { params: start, hyperparameters: { lr: 0.25 } });
  const results = await Promise.all([0, 1, 2, 3].map(async (rank) => {
    const w = await client().worker(n, `w${rank}`);
    while (w.step < 5) await w.push(gradOf(rank, w.step, 3), { loss: rank });
    return [w.step, w.params, w.applied, w.refused];
  }));
  for (let k = 0; k < 5; k++) {
    const g = [0, 1, 2, 3].map((r) => gradOf(r, k, 3));
    await c.step(twin, [0, 1, 2].map((i) => g.reduce((s, x) => s + x[i], 0) / 4), { expectStep: k });
  }
  const want = await c.params(twin);
  for (const r of results) assert.deepEqual(r, [5, want.params, 5, 0]);
  const h = await c.history(n);
  assert.deepEqual(h.map((e) => [e.step, e.contributions, e.loss]), [1, 2, 3, 4, 5].map((s) => [s, 4, 1.5]));
});

test("backup workers: each round takes 2 of 3, the rest are refused and go on (binary)", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [0], dtype: "float32", hyperparameters: { lr: 1 },
    aggregate: { workers: 2, reduce: "sum" } });
  const ws = await Promise.all([0, 1, 2].map(async (rank) => {
    const w = await client().worker(n, `w${rank}`, { binary: true });
    while (w.step < 10) await w.push(new Float32Array([1]));
    assert.ok(w.params instanceof Float32Array);
    return w;
  }));
  const p = await c.params(n);
  assert.deepEqual(p, { step: 10, params: [-20] });
  assert.equal(ws.reduce((s, w) => s + w.applied, 0), 20);
  assert.equal(ws.reduce((s, w) => s + w.pushes, 0), 20 + ws.reduce((s, w) => s + w.refused, 0));
});

test("a 202 leaves the contribution in the round; the Worker waits for it", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [1, 1], hyperparameters: { lr: 1 }, aggregate: { workers: 2 } });
  const first = await c.contribute(n, "w0", 0, [1, 3], { wait: 0 });
  assert.equal(first.applied, false);
  assert.equal(first.step, 0);
  assert.equal((await c.get(n)).round.contributions, 1);
  const w0 = new Worker(client(), n, "w0", { wait: 1 });
  await w0.pull();
  const pushed = w0.push([1, 3]);
  while (w0.pending < 1) await new Promise((r) => setTimeout(r, 20));
  const w1 = await c.worker(n, "w1");
  assert.equal(await w1.push([3, 1]), true);
  assert.equal(await pushed, true);
  assert.deepEqual([w0.step, w0.params, w0.refused], [1, [-1, -1], 0]);
  await assert.rejects(c.contribute(n, "w0", 0, [1, 1]),
    (e) => e instanceof OptdError && e.code === "step_mismatch" && e.currentStep === 1);
});

test("params long poll: minStep and wait", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [1], hyperparameters: { lr: 1 } });
  assert.deepEqual(await c.params(n, { minStep: 3, wait: 0 }), { step: 0, params: [1] });
  const later = client().params(n, { minStep: 2, wait: 60, binary: true });
  await c.step(n, [1], { expectStep: 0 });
  await c.step(n, [1], { expectStep: 1 });
  const got = await later;
  assert.equal(got.step, 2);
  assert.deepEqual(Array.from(got.params), [-1]);
});
