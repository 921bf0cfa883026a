// client.test.js: the JS client against a real optd.
//
//   OPTD_URL=http://127.0.0.1:PORT node --test api/clients/js/test/
//
// Without OPTD_URL the tests start a daemon themselves from OPTD_BIN
// (default build/optd) on a free loopback port and stop it at the end
// (test/daemon.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { freePort, useDaemon } from "./daemon.js";
import { Client, OptdError, listAcross } from "../optd.js";

const d = useDaemon();
let counter = 0;
const uname = (p = "js") => `${p}-${process.pid}-${++counter}`;

const client = () => new Client(d.base, { token: d.token, timeoutMs: 10000 });

test("health, metrics, optimizers", async () => {
  const c = client();
  assert.deepEqual(await c.health(), { status: "ok" });
  assert.match(await c.metrics(), /optd_sessions/);
  const opts = Object.fromEntries((await c.optimizers()).map((o) => [o.name, o]));
  assert.equal(opts.adam.hyperparameters.lr, 0.001);
  assert.ok(opts.sgd && opts.lion);
});

test("create, get, patch, delete", async () => {
  const c = client();
  const n = uname();
  const d = await c.create(n, "adam", { params: [1, 2], hyperparameters: { lr: 0.01 }, labels: { who: "js" } });
  assert.equal(d.name, n);
  assert.equal(d.size, 2);
  assert.equal(d.step, 0);
  assert.deepEqual((await c.get(n)).labels, { who: "js" });
  const p = await c.patch(n, { hyperparameters: { lr: 0.5 }, schedule: { type: "step", step_size: 2, gamma: 0.5 } });
  assert.equal(p.hyperparameters.lr, 0.5);
  assert.equal(p.schedule.type, "step");
  assert.equal((await c.patch(n, { schedule: null })).schedule, null);
  await c.delete(n);
  await assert.rejects(c.get(n), (e) => e instanceof OptdError && e.status === 404 && e.code === "not_found");
});

test("create by POST, already_exists, invalid_argument", async () => {
  const c = client();
  const n = uname();
  assert.equal((await c.create(n, "sgd", { size: 3, usePost: true })).size, 3);
  await assert.rejects(c.create(n, "sgd", { size: 3 }), (e) => e.status === 409 && e.code === "already_exists");
  await assert.rejects(c.create(uname(), "adam", { params: [1], hyperparameters: { lr: -1 } }),
    (e) => e.status === 400 && e.code === "invalid_argument" && e.apiMessage.length > 0);
});

test("JSON steps match SGD exactly; history; step_mismatch", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [1, -2, 0.5], hyperparameters: { lr: 0.25 } });
  const r = await c.step(n, [1, 2, -4], { expectStep: 0, loss: 3.5 });
  assert.deepEqual(r, { step: 1, params: [0.75, -2.5, 1.5] });
  assert.deepEqual(await c.step(n, [0, 0, 0], { returnParams: false }), { step: 2, params: null });
  assert.deepEqual(await c.params(n), { step: 2, params: [0.75, -2.5, 1.5] });
  const h = await c.history(n);
  assert.deepEqual(h.map((e) => e.step), [1, 2]);
  assert.equal(h[0].loss, 3.5);
  assert.deepEqual((await c.history(n, { afterStep: 1 })).map((e) => e.step), [2]);
  await assert.rejects(c.step(n, [1, 1, 1], { expectStep: 0 }),
    (e) => e.status === 409 && e.code === "step_mismatch" && e.currentStep === 2);
  await assert.rejects(c.step(n, [1, 1]), (e) => e.code === "size_mismatch");
});

test("binary steps with typed arrays", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [1, 2], hyperparameters: { lr: 0.5 } });
  const r = await c.step(n, new Float64Array([2, -2]), { expectStep: 0 });
  assert.equal(r.step, 1);
  assert.ok(r.params instanceof Float64Array);
  assert.deepEqual(Array.from(r.params), [0, 3]);
  const p = await c.params(n, { binary: true });
  assert.deepEqual([p.step, Array.from(p.params)], [1, [0, 3]]);
  const f = uname();
  await c.create(f, "sgd", { params: [1, 2], dtype: "float32", hyperparameters: { lr: 0.5 } });
  const r32 = await c.step(f, new Float32Array([0.5, 1]), { loss: 1.25 });
  assert.ok(r32.params instanceof Float32Array);
  assert.deepEqual(Array.from(r32.params), [0.75, 1.5]);
  await assert.rejects(c.step(f, new Float32Array([NaN, 1])), (e) => e.code === "non_finite");
});

test("binary steps name their dtype", async () => {
  // 8 float32 values are the 32 bytes of 4 float64: the client says which
  // it sends (Optd-Dtype), and the daemon refuses the wrong one.
  const c = client();
  const n = uname();
  await c.create(n, "sgd", { params: [1, 2, 3, 4] });
  await assert.rejects(c.step(n, new Float32Array(8).fill(0.5)),
    (e) => e.status === 400 && e.code === "invalid_argument");
  assert.deepEqual((await c.params(n)).params, [1, 2, 3, 4]);
  const r = await c.step(n, new Float64Array(4).fill(0.5));
  assert.ok(r.params instanceof Float64Array);
  assert.equal(r.step, 1);
});

test("list, iterate, labels", async () => {
  const c = client();
  const prefix = uname("list") + "-";
  for (let i = 0; i < 5; i++) await c.create(`${prefix}${i}`, "sgd", { size: 1, labels: { parity: i % 2 ? "odd" : "even" } });
  const page = await c.listSessions({ limit: 2, prefix });
  assert.deepEqual(page.sessions.map((s) => s.name), [`${prefix}0`, `${prefix}1`]);
  assert.equal(page.next_after, `${prefix}1`);
  const all = [];
  for await (const s of c.iterSessions({ prefix, pageSize: 2 })) all.push(s.name);
  assert.deepEqual(all, [0, 1, 2, 3, 4].map((i) => `${prefix}${i}`));
  const even = (await listAcross([c], { prefix, labels: { parity: "even" } })).map((s) => s.name);
  assert.deepEqual(even, [0, 2, 4].map((i) => `${prefix}${i}`));
});

test("a fleet: steps() in one request, ranked with sort=best_loss", async () => {
  // listSessions used to drop sort and offset without a word (ranked by
  // name), and the JS client had no POST /v1/steps.
  const c = client();
  const prefix = uname("fleet") + "-";
  const names = [0, 1, 2].map((i) => `${prefix}${i}`);
  for (const n of names) await c.create(n, "sgd", { params: [1, 2], hyperparameters: { lr: 0.5 } });
  const res = await c.steps([
    { session: names[0], gradient: [1, 1], step: 0, loss: 3 },
    { session: names[1], gradient: new Float64Array([2, 2]), step: 0, loss: 1 },
    { session: names[2], gradient: [1, 1], step: 5, loss: 2 },
    { session: names[2], gradient: [1, 1], loss: 2 },
  ]);
  assert.deepEqual(res.slice(0, 2), [{ session: names[0], step: 1, params: [0.5, 1.5] },
    { session: names[1], step: 1, params: [0, 1] }]);
  assert.equal(res[2].error.code, "step_mismatch");
  assert.equal(res[3].step, 1);
  const none = await c.steps([{ session: names[0], gradient: [0, 0], step: 1 }], { returnParams: false });
  assert.deepEqual(none.map((r) => [r.session, r.step, r.params]), [[names[0], 2, undefined]]);
  const page = await c.listSessions({ prefix, sort: "best_loss", limit: 2 });
  assert.deepEqual(page.sessions.map((s) => s.name), [names[1], names[2]]);
  assert.equal(page.next_offset, 2);
  const rest = await c.listSessions({ prefix, sort: "best_loss", limit: 2, offset: page.next_offset });
  assert.deepEqual(rest.sessions.map((s) => s.name), [names[0]]);
  assert.throws(() => c.listSessions({ prefix, sortBy: "best_loss" }), /unknown option 'sortBy'/);
});

test("state export/import and fork", async () => {
  const c = client();
  const n = uname();
  await c.create(n, "adam", { params: [1, 2, 3] });
  for (let k = 0; k < 3; k++) await c.step(n, [0.1, -0.2, 0.3], { expectStep: k });
  const doc = await c.exportState(n);
  assert.ok(doc.state.exp_avg);
  const copy = uname();
  assert.equal((await c.importState(copy, doc)).created, true);
  assert.equal((await c.importState(copy, doc)).created, false);
  const back = await c.exportState(copy);
  assert.deepEqual([back.params, back.state, back.step], [doc.params, doc.state, 3]);
  const f = uname();
  const d = await c.fork(n, f, { hyperparameters: { lr: 0.05 } });
  assert.equal(d.step, 3);
  assert.equal(d.hyperparameters.lr, 0.05);
  await assert.rejects(c.fork(uname("missing"), uname()), (e) => e.code === "not_found");
});

test("network errors and timeouts are OptdError", async () => {
  const port = await freePort();
  const c = new Client(`http://127.0.0.1:${port}`, { retries: 1, backoffMs: 1, timeoutMs: 2000 });
  await assert.rejects(c.health(), (e) => e instanceof OptdError && e.code === "connection_error" && e.status === null);
  const silent = createServer(() => {});
  await new Promise((r) => silent.listen(0, "127.0.0.1", r));
  try {
    const t = new Client(`http://127.0.0.1:${silent.address().port}`, { retries: 0, timeoutMs: 300 });
    await assert.rejects(t.health(), (e) => e instanceof OptdError && e.code === "timeout");
  } finally {
    silent.close();
    silent.unref();
  }
});

test("a body cut off by an early answer says why, not 'cannot reach'", async () => {
  // As fetch sees optd refuse a body over --max-body-bytes (413 from the
  // headers, then the connection closed with the body unread): EPIPE or
  // ECONNRESET while sending, the answer lost (measured: write EPIPE).
  const early = createServer((sock) => sock.once("data", () => sock.destroy()));
  await new Promise((r) => early.listen(0, "127.0.0.1", r));
  try {
    const c = new Client(`http://127.0.0.1:${early.address().port}`, { retries: 0, timeoutMs: 5000 });
    await assert.rejects(c.step("s", new Float64Array(2000000)),
      (e) => e instanceof OptdError && e.code === "connection_error" && /max-body-bytes/.test(e.message));
  } finally {
    early.close();
    early.unref();
  }
});

test("one naming style: camelCase options in create and patch, others refused", async () => {
  const c = client();
  const n = uname();
  const d = await c.create(n, "adam", { size: 2, maxGradNorm: 1.5, ttlSeconds: 600 });
  assert.equal(d.max_grad_norm, 1.5);
  assert.equal(d.ttl_seconds, 600);
  const p = await c.patch(n, { maxGradNorm: 0.5, ttlSeconds: null });
  assert.deepEqual([p.max_grad_norm, p.ttl_seconds], [0.5, null]);
  assert.equal((await c.patch(n, { maxGradNorm: null })).max_grad_norm, null);
  await assert.rejects(c.patch(n, { max_grad_norm: 1 }), (e) => e instanceof TypeError && /maxGradNorm/.test(e.message));
  await assert.rejects(c.create(uname(), "adam", { size: 1, ttl_seconds: 5 }), (e) => e instanceof TypeError);
  assert.equal((await c.get(n)).max_grad_norm, null);
});

test("groups, binary setParams and typed arrays as their own bytes", async () => {
  const c = client();
  const n = uname();
  const d = await c.create(n, "sgd", { size: 3, dtype: "float32", hyperparameters: { lr: 0.5 },
    groups: [{ size: 1 }, { size: 2, hyperparameters: { lr: 0.25 } }] });
  assert.deepEqual(d.groups.map((g) => [g.size, g.hyperparameters.lr]), [[1, 0.5], [2, 0.25]]);
  // A view into a larger buffer (byteOffset 4): only its own bytes go out.
  const big = new Float32Array([9, 1, 2, 4, 9]);
  assert.equal(await c.setParams(n, big.subarray(1, 4), { expectStep: 0 }), 0);
  assert.deepEqual(Array.from((await c.params(n, { binary: true })).params), [1, 2, 4]);
  const r = await c.step(n, new Float32Array([2, 4, 8]));
  assert.deepEqual(Array.from(r.params), [0, 1, 2]);
  const g = await c.patch(n, { groups: [{}, { hyperparameters: { lr: 0.125 } }] });
  assert.deepEqual(g.groups.map((x) => x.hyperparameters.lr), [0.5, 0.125]);
  assert.equal(await c.setParams(n, [1, 1, 1]), 1);
  await assert.rejects(c.setParams(n, new Float64Array([1, 1, 1])), (e) => e.code === "size_mismatch" || e.code === "invalid_argument");
  // 100k values round-trip exactly.
  const m = uname();
  const v = Float64Array.from({ length: 100000 }, (_, i) => Math.sin(i) * 1e3);
  await c.create(m, "sgd", { size: v.length });
  await c.setParams(m, v);
  const back = (await c.params(m, { binary: true })).params;
  assert.ok(back instanceof Float64Array);
  assert.deepEqual(back, v);
});

test("tables: rows steps in JSON and binary, reading rows", async () => {
  const c = client();
  const t = uname("js-table");
  const d = await c.create(t, "sgd", { size: 12, rowSize: 3, dtype: "float32", hyperparameters: { lr: 0.5 } });
  assert.equal(d.row_size, 3);
  // JSON: row 1 twice (summed), row 3 once.
  let r = await c.stepRows(t, [1, 3, 1], [1, 1, 1, 2, 2, 2, 1, 0, -1], { expectStep: 0, returnParams: false });
  assert.deepEqual(r, { step: 1, params: null });
  // Binary: rows as uint64, values as float32.
  r = await c.stepRows(t, [0, 3], new Float32Array([2, 4, 8, 1, 1, 1]), { expectStep: 1, returnParams: false });
  assert.equal(r.step, 2);
  const all = await c.readRows(t, [3, 0, 1, 2, 3]);
  assert.equal(all.step, 2);
  assert.deepEqual(all.params, [-1.5, -1.5, -1.5, -1, -2, -4, -1, -0.5, 0, 0, 0, 0, -1.5, -1.5, -1.5]);
  const bin = await c.readRows(t, [1], { binary: true });
  assert.ok(bin.params instanceof Float32Array);
  assert.deepEqual(Array.from(bin.params), [-1, -0.5, 0]);
  await assert.rejects(c.stepRows(t, [4], [1, 1, 1]), (e) => e instanceof OptdError && e.status === 400);
  await c.delete(t);
});
