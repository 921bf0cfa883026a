// optd.js: a JavaScript client for the optd HTTP API (ES module, no
// dependencies, the built-in fetch of Node 18+ and browsers).
//
//   import { Client } from "./optd.js";
//   const c = new Client("http://127.0.0.1:8080", { token, timeoutMs: 30000 });
//   await c.create("exp-1", "adam", { params: [0.5, -1.25], hyperparameters: { lr: 0.01 } });
//   const r = await c.step("exp-1", [0.1, -0.2], { expectStep: 0 });  // { step, params }
//
// Every endpoint of API.md is a method.  Errors the daemon answers are
// thrown as OptdError with code, message, status (and currentStep for
// step_mismatch).  Connections are kept alive by fetch.  Retries follow the
// same rule as the Python client: idempotent requests (reads, PATCH, PUT
// .../state) are retried after a network failure or a 503; a step only when
// expectStep is given, since the daemon's compare-and-swap then refuses a
// second application (a retry that meets step_mismatch with currentStep ==
// expectStep + 1 knows its first attempt was applied); a contribution to a
// round always, since the daemon keys it by (worker, step) and never counts
// a repeat twice; create and delete are never retried.

export class OptdError extends Error {
  constructor(status, code, message, currentStep = undefined, body = undefined) {
    super(`${status ?? "-"} ${code}: ${message}`);
    this.name = "OptdError";
    this.status = status;
    this.code = code;
    this.apiMessage = message;
    this.currentStep = currentStep;
    this.body = body;
    this.attempts = 0;
  }
}

const RETRY_SAFE = "safe";
const RETRY_CAS = "cas";
const RETRY_NONE = "none";

function isTyped(x) {
  return x instanceof Float64Array || x instanceof Float32Array;
}

// Binary bodies are little-endian.  On a little-endian host (every one
// Node runs on in practice) a typed array's own bytes are that: they are
// sent and received as they are, with no loop over the elements (a loop
// cost 2-3x the transport at 100k values).  A big-endian host swaps bytes.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Little-endian bytes of a Float32Array / Float64Array (a view, not a copy,
// on little-endian hosts).
function toLittleEndian(arr) {
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  return LITTLE_ENDIAN ? bytes : swapBytes(bytes, arr.BYTES_PER_ELEMENT);
}

// A Float32Array / Float64Array over an ArrayBuffer of little-endian values
// (the buffer itself on little-endian hosts).
function fromLittleEndian(buf, dtype) {
  const Type = dtype === "float32" ? Float32Array : Float64Array;
  if (buf.byteLength % Type.BYTES_PER_ELEMENT !== 0) {
    throw new OptdError(null, "bad_answer", `a binary answer of ${buf.byteLength} bytes is no ${dtype} array`);
  }
  return new Type(LITTLE_ENDIAN ? buf : swapBytes(new Uint8Array(buf), Type.BYTES_PER_ELEMENT).buffer);
}

function swapBytes(bytes, width) {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) {
    for (let j = 0; j < width; j++) out[i + j] = bytes[i + width - 1 - j];
  }
  return out;
}

// The dtype of a binary answer, refused (never decoded as another dtype)
// when it is not one optd has or not the one the request sent.
function checkDtype(resp, dtype, expected = undefined) {
  if ((dtype !== "float32" && dtype !== "float64") || (expected !== undefined && dtype !== expected)) {
    throw new OptdError(resp.status, "dtype_mismatch",
      `the answer holds ${dtype} values; ${expected ?? "float32 or float64"} were sent`);
  }
  return dtype;
}

// The options of create/fork/patch in the one naming style of this client
// (camelCase), and the API field each one is.
const FIELDS = {
  hyperparameters: "hyperparameters", dtype: "dtype", schedule: "schedule", maxGradNorm: "max_grad_norm",
  labels: "labels", ttlSeconds: "ttl_seconds", groups: "groups", rowSize: "row_size", aggregate: "aggregate",
};

// The API body of options' known fields; any other key is a TypeError
// naming the accepted ones (so patch(name, { max_grad_norm }) says to use
// maxGradNorm instead of sending what the daemon would refuse).
function apiFields(options, allowed, what) {
  const body = {};
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined) continue;
    if (!allowed.includes(k)) {
      throw new TypeError(`${what}: unknown option '${k}' (options: ${allowed.join(", ")})`);
    }
    if (k in FIELDS) body[FIELDS[k]] = v;
  }
  return body;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Client {
  // baseUrl: "http://host:port" (a path prefix is kept).  options: token,
  // timeoutMs (per request, default 30000), retries (default 3), backoffMs.
  constructor(baseUrl = "http://127.0.0.1:8080", options = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = options.token ?? null;
    this.timeoutMs = options.timeoutMs ?? 30000;
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 50;
  }

  static path(name, tail = "") {
    return `/v1/sessions/${encodeURIComponent(name)}${tail}`;
  }

  // timeoutMs: this request's limit instead of the client's (a long poll
  // waits its wait plus the client's timeout).
  async request(method, path, { json, raw, headers = {}, query, retry = RETRY_SAFE, timeoutMs } = {}) {
    const limitMs = timeoutMs ?? this.timeoutMs;
    let url = this.baseUrl + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of query) if (v !== undefined && v !== null) q.append(k, String(v));
      const s = q.toString();
      if (s) url += "?" + s;
    }
    const hdrs = { Accept: "application/json", ...headers };
    let body;
    if (json !== undefined) {
      body = JSON.stringify(json);
      hdrs["Content-Type"] = "application/json";
    } else if (raw !== undefined) {
      body = raw;
      hdrs["Content-Type"] = "application/octet-stream";
    }
    if (this.token) hdrs.Authorization = `Bearer ${this.token}`;

    for (let attempt = 0; ; attempt++) {
      let resp;
      try {
        resp = await fetch(url, { method, headers: hdrs, body, signal: AbortSignal.timeout(limitMs) });
      } catch (e) {
        const timedOut = e && (e.name === "TimeoutError" || e.name === "AbortError");
        if (retry !== RETRY_NONE && attempt < this.retries) {
          await sleep(this.backoffMs * 2 ** attempt);
          continue;
        }
        // fetch cannot read an answer sent before the body was all written:
        // optd refuses some requests from their headers and closes.
        const cut = body !== undefined && ["EPIPE", "ECONNRESET"].includes(e.cause?.code);
        const err = new OptdError(null, timedOut ? "timeout" : "connection_error",
          timedOut ? `no answer from ${this.baseUrl} within ${limitMs} ms`
            : cut ? `${this.baseUrl} closed the connection while the body was being sent ` +
                    `(${e.cause.message}): optd refuses that way, before reading it, a body over ` +
                    `its --max-body-bytes (413) or one that --max-body-memory cannot hold now (503)`
            : `cannot reach ${this.baseUrl}: ${e.cause?.message ?? e.message}`);
        err.cause = e;
        err.attempts = attempt;
        throw err;
      }
      if (resp.status === 503 && retry !== RETRY_NONE && attempt < this.retries) {
        await resp.arrayBuffer();
        await sleep(this.backoffMs * 2 ** attempt);
        continue;
      }
      if (resp.status >= 400) {
        const text = await resp.text();
        let err;
        try {
          const doc = JSON.parse(text);
          err = new OptdError(resp.status, doc.error.code, doc.error.message, doc.error.current_step, doc);
        } catch {
          err = new OptdError(resp.status, `http_${resp.status}`, text.slice(0, 200) || `HTTP ${resp.status}`);
        }
        err.attempts = attempt;
        throw err;
      }
      return { resp, attempts: attempt };
    }
  }

  async json(method, path, opts = {}) {
    const { resp } = await this.request(method, path, opts);
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  health() { return this.json("GET", "/healthz"); }

  async metrics() {
    const { resp } = await this.request("GET", "/metrics", { headers: { Accept: "text/plain" } });
    return resp.text();
  }

  async optimizers() { return (await this.json("GET", "/v1/optimizers")).optimizers; }

  // Creates a session and returns its descriptor.  options: params | size |
  // from, hyperparameters, dtype, schedule, maxGradNorm, labels, ttlSeconds,
  // groups ([{ size, hyperparameters }]), aggregate ({ workers, reduce,
  // max_staleness }: rounds of N workers, see contribute and Worker), usePost
  // (POST /v1/sessions instead of PUT /v1/sessions/{name}, which is the form
  // a sharding proxy can route).
  async create(name, optimizer, options = {}) {
    const body = apiFields(options, ["params", "size", "from", "usePost", ...Object.keys(FIELDS)], "create");
    if (optimizer !== undefined && optimizer !== null) body.optimizer = optimizer;
    if (options.params !== undefined) body.params = Array.from(options.params);
    if (options.size !== undefined) body.size = options.size;
    if (options.from !== undefined) body.from = options.from;
    if (options.usePost) {
      body.name = name;
      return this.json("POST", "/v1/sessions", { json: body, retry: RETRY_NONE });
    }
    return this.json("PUT", Client.path(name), { json: body, retry: RETRY_NONE });
  }

  // Creates `name` as a copy of `source`; behind a sharding proxy where the
  // source is on another replica (not_found), copies through GET/PUT .../state.
  async fork(source, name, options = {}) {
    try {
      return await this.create(name, undefined, { ...options, from: source });
    } catch (e) {
      if (!(e instanceof OptdError) || e.code !== "not_found") throw e;
    }
    const doc = await this.exportState(source);
    try {
      await this.get(name);
      throw new OptdError(409, "already_exists", `a session named ${name} already exists`);
    } catch (e) {
      if (!(e instanceof OptdError) || e.code !== "not_found") throw e;
    }
    doc.name = name;
    if (options.hyperparameters) doc.hyperparameters = { ...doc.hyperparameters, ...options.hyperparameters };
    if (options.schedule !== undefined) doc.schedule = options.schedule;
    if (options.maxGradNorm !== undefined) doc.max_grad_norm = options.maxGradNorm;
    doc.labels = options.labels ?? {};
    doc.ttl_seconds = options.ttlSeconds ?? null;
    await this.importState(name, doc);
    return this.get(name);
  }

  // One page: { sessions, next_after }.  labels: object or ["k:v", ...].
  // sort: "name" (default), "best_loss" or "last_loss" (ascending by the
  // loss summary; page on with offset = the answer's next_offset).  Any
  // other option is a TypeError (an ignored sort would rank by name).
  listSessions({ limit, after, prefix, labels, sort, offset, ...rest } = {}) {
    const unknown = Object.keys(rest);
    if (unknown.length) {
      throw new TypeError(`listSessions: unknown option '${unknown[0]}' ` +
        "(options: limit, after, prefix, labels, sort, offset)");
    }
    const query = [["limit", limit], ["after", after], ["prefix", prefix], ["sort", sort], ["offset", offset]];
    if (labels) {
      const items = Array.isArray(labels) ? labels : Object.entries(labels).map(([k, v]) => `${k}:${v}`);
      for (const l of items) query.push(["label", l]);
    }
    return this.json("GET", "/v1/sessions", { query });
  }

  // Every descriptor, following next_after.
  async *iterSessions({ prefix, labels, pageSize = 1000 } = {}) {
    let after;
    for (;;) {
      const page = await this.listSessions({ limit: pageSize, after, prefix, labels });
      yield* page.sessions;
      if (!page.next_after) return;
      after = page.next_after;
    }
  }

  get(name) { return this.json("GET", Client.path(name)); }

  // options: any of hyperparameters, schedule, maxGradNorm, labels,
  // ttlSeconds, groups ([{ hyperparameters }], one per group), aggregate;
  // null removes where API.md allows (aggregate: null turns rounds off and
  // drops the pending round).  The same names as create.
  async patch(name, options = {}) {
    const body = apiFields(options,
      ["hyperparameters", "schedule", "maxGradNorm", "labels", "ttlSeconds", "groups", "aggregate"], "patch");
    return this.json("PATCH", Client.path(name), { json: body });
  }

  async delete(name) {
    const { resp } = await this.request("DELETE", Client.path(name), { retry: RETRY_NONE });
    await resp.arrayBuffer();
  }

  // { step, params }; binary: true gives a Float64Array/Float32Array.
  // minStep, wait (seconds): a long poll (API.md, Waiting for parameters):
  // the answer comes once the step is >= minStep, or after wait seconds with
  // whatever step the session is at; compare the step returned.
  async params(name, { binary = false, minStep, wait } = {}) {
    const query = [["min_step", minStep], ["wait", wait]];
    const timeoutMs = wait ? this.timeoutMs + wait * 1000 : undefined;
    if (!binary) return this.json("GET", Client.path(name, "/params"), { query, timeoutMs });
    const { resp } = await this.request("GET", Client.path(name, "/params"),
      { headers: { Accept: "application/octet-stream" }, query, timeoutMs });
    const buf = await resp.arrayBuffer();
    const step = Number(resp.headers.get("Optd-Step"));
    // Every binary answer of optd 1.1 names its dtype; an older daemon's
    // does not, and the session says.
    const dtype = checkDtype(resp, resp.headers.get("Optd-Dtype") ?? (await this.get(name)).dtype);
    return { step, params: fromLittleEndian(buf, dtype) };
  }

  // One update.  gradient: an array (JSON body) or a Float64Array /
  // Float32Array of the session's dtype (binary body, binary answer).
  // options: expectStep, loss, returnParams (default true).
  async step(name, gradient, { expectStep, loss, returnParams = true } = {}) {
    const binary = isTyped(gradient);
    const query = returnParams ? undefined : [["return", "none"]];
    const retry = expectStep !== undefined ? RETRY_CAS : RETRY_NONE;
    try {
      if (binary) {
        const dtype = gradient instanceof Float32Array ? "float32" : "float64";
        // The daemon refuses a body of another dtype than the session's
        // instead of reading its bytes as that dtype.
        const headers = { Accept: "application/octet-stream", "Optd-Dtype": dtype };
        if (expectStep !== undefined) headers["Optd-Expect-Step"] = String(expectStep);
        if (loss !== undefined) headers["Optd-Loss"] = String(loss);
        const { resp } = await this.request("POST", Client.path(name, "/step"),
          { raw: toLittleEndian(gradient), headers, query, retry });
        const buf = await resp.arrayBuffer();
        const step = Number(resp.headers.get("Optd-Step"));
        checkDtype(resp, resp.headers.get("Optd-Dtype") ?? dtype, dtype);
        return { step, params: returnParams ? fromLittleEndian(buf, dtype) : null };
      }
      const body = { gradient: Array.from(gradient) };
      if (expectStep !== undefined) body.step = expectStep;
      if (loss !== undefined) body.loss = loss;
      const doc = await this.json("POST", Client.path(name, "/step"), { json: body, query, retry });
      return { step: doc.step, params: doc.params ?? null };
    } catch (e) {
      if (e instanceof OptdError && e.code === "step_mismatch" && expectStep !== undefined &&
          e.attempts > 0 && e.currentStep === expectStep + 1) {
        if (!returnParams) return { step: e.currentStep, params: null };
        const p = await this.params(name, { binary });
        if (p.step === e.currentStep) return p;
      }
      throw e;
    }
  }

  // POST /v1/steps: a fleet's step, many sessions in one request, applied
  // in order.  items: [{ session, gradient (array or typed array), step?,
  // loss?, rows? }].  Returns one result per item, in order: { session,
  // step, params } or { session, error: { code, message, current_step? } }
  // (an item's failure is its own, never a throw).  Retried after a broken
  // connection only when every item carries step (then a retry is safe).
  async steps(items, { returnParams = true } = {}) {
    const body = { steps: items.map((it) => (isTyped(it.gradient) ? { ...it, gradient: Array.from(it.gradient) } : it)) };
    const query = returnParams ? undefined : [["return", "none"]];
    const retry = items.every((it) => it.step !== undefined) ? RETRY_CAS : RETRY_NONE;
    return (await this.json("POST", "/v1/steps", { json: body, query, retry })).results;
  }

  // A rows step on a table (API.md "Tables"): only `rows` change (a row
  // listed twice has its gradients summed in order).  gradient: rows.length
  // x rowSize values, row after row: an array (JSON body) or a Float32Array
  // / Float64Array of the session's dtype (binary body: the rows as
  // little-endian uint64, then the values, with Optd-Rows).  Returns
  // { step, params } with params as the daemon answers them (null with
  // returnParams: false).
  async stepRows(name, rows, gradient, { expectStep, loss, returnParams = true } = {}) {
    const query = returnParams ? undefined : [["return", "none"]];
    const retry = expectStep !== undefined ? RETRY_CAS : RETRY_NONE;
    if (isTyped(gradient)) {
      const dtype = gradient instanceof Float32Array ? "float32" : "float64";
      const values = toLittleEndian(gradient);
      const body = new Uint8Array(rows.length * 8 + values.length);
      const view = new DataView(body.buffer);
      rows.forEach((r, i) => view.setBigUint64(i * 8, BigInt(r), true));
      body.set(values, rows.length * 8);
      const headers = { Accept: "application/octet-stream", "Optd-Dtype": dtype, "Optd-Rows": String(rows.length) };
      if (expectStep !== undefined) headers["Optd-Expect-Step"] = String(expectStep);
      if (loss !== undefined) headers["Optd-Loss"] = String(loss);
      const { resp } = await this.request("POST", Client.path(name, "/step"), { raw: body, headers, query, retry });
      const buf = await resp.arrayBuffer();
      const step = Number(resp.headers.get("Optd-Step"));
      if (!returnParams || buf.byteLength === 0) return { step, params: null };
      checkDtype(resp, resp.headers.get("Optd-Dtype") ?? dtype, dtype);
      return { step, params: fromLittleEndian(buf, dtype) };
    }
    const body = { rows: Array.from(rows), gradient: Array.from(gradient) };
    if (expectStep !== undefined) body.step = expectStep;
    if (loss !== undefined) body.loss = loss;
    const doc = await this.json("POST", Client.path(name, "/step"), { json: body, query, retry });
    return { step: doc.step, params: returnParams ? doc.params ?? null : null };
  }

  // POST .../rows: { step, params } with rows.length x rowSize values in the
  // order asked (any number of rows, repeats allowed); binary: true gives a
  // Float32Array / Float64Array.
  async readRows(name, rows, { binary = false } = {}) {
    const json = { rows: Array.from(rows) };
    if (!binary) {
      const doc = await this.json("POST", Client.path(name, "/rows"), { json });
      return { step: doc.step, params: doc.params };
    }
    const { resp } = await this.request("POST", Client.path(name, "/rows"),
      { json, headers: { Accept: "application/octet-stream" } });
    const buf = await resp.arrayBuffer();
    const dtype = checkDtype(resp, resp.headers.get("Optd-Dtype") ?? (await this.get(name)).dtype);
    return { step: Number(resp.headers.get("Optd-Step")), params: fromLittleEndian(buf, dtype) };
  }

  // One worker's gradient for the round of an aggregating session (API.md,
  // Rounds), computed from the parameters of `step`.  Resolves to
  //   { applied: true, step, params }    the round was applied (200): the
  //                                      new parameters, the same for all;
  //   { applied: false, step, round }    still open after `wait` seconds
  //                                      (202): the contribution stays in it.
  // A contribution that cannot join (stale, a backup the round did not need,
  // a repeat of one applied) rejects with OptdError step_mismatch and
  // currentStep.  gradient: an array (JSON) or a typed array (binary).
  // Retried after a network failure or a 503 like a read: the daemon keys a
  // contribution by (worker, step), so a repeat replaces the pending one or
  // is refused once applied, never counted twice.
  async contribute(name, worker, step, gradient, { loss, wait } = {}) {
    const query = [["wait", wait]];
    const timeoutMs = this.timeoutMs + (wait ?? 60) * 1000;
    const path = Client.path(name, "/step");
    let resp;
    if (isTyped(gradient)) {
      const dtype = gradient instanceof Float32Array ? "float32" : "float64";
      const headers = { Accept: "application/octet-stream", "Optd-Dtype": dtype,
        "Optd-Worker": worker, "Optd-Expect-Step": String(step) };
      if (loss !== undefined) headers["Optd-Loss"] = String(loss);
      ({ resp } = await this.request("POST", path, { raw: toLittleEndian(gradient), headers, query, timeoutMs }));
      if (resp.status === 200) {
        const buf = await resp.arrayBuffer();
        checkDtype(resp, resp.headers.get("Optd-Dtype") ?? dtype, dtype);
        return { applied: true, step: Number(resp.headers.get("Optd-Step")), params: fromLittleEndian(buf, dtype) };
      }
    } else {
      const body = { gradient: Array.from(gradient), worker, step };
      if (loss !== undefined) body.loss = loss;
      ({ resp } = await this.request("POST", path, { json: body, query, timeoutMs }));
      if (resp.status === 200) {
        const doc = await resp.json();
        return { applied: true, step: doc.step, params: doc.params ?? null };
      }
    }
    // 202: {"step": c, "round": {...}}.
    const text = await resp.text();
    const doc = (resp.headers.get("Content-Type") ?? "").includes("json") && text ? JSON.parse(text) : {};
    const h = resp.headers.get("Optd-Step");
    return { applied: false, step: doc.step ?? (h === null ? null : Number(h)), round: doc.round ?? null };
  }

  // A Worker: the loop of one data-parallel worker on `session`; resolves
  // once it has fetched the parameters.
  async worker(session, name, options = {}) {
    const w = new Worker(this, session, name, options);
    await w.pull();
    return w;
  }

  // PUT .../params: replaces the parameters, keeping the optimizer state
  // and the step; returns the step.  params: an array (JSON) or a
  // Float64Array / Float32Array of the session's dtype (binary).
  async setParams(name, params, { expectStep } = {}) {
    if (isTyped(params)) {
      const headers = { "Optd-Dtype": params instanceof Float32Array ? "float32" : "float64" };
      if (expectStep !== undefined) headers["Optd-Expect-Step"] = String(expectStep);
      const { resp } = await this.request("PUT", Client.path(name, "/params"), { raw: toLittleEndian(params), headers });
      return (await resp.json()).step;
    }
    const body = { params: Array.from(params) };
    if (expectStep !== undefined) body.step = expectStep;
    return (await this.json("PUT", Client.path(name, "/params"), { json: body })).step;
  }

  async history(name, { limit, afterStep } = {}) {
    return (await this.json("GET", Client.path(name, "/history"),
      { query: [["limit", limit], ["after_step", afterStep]] })).history;
  }

  exportState(name) { return this.json("GET", Client.path(name, "/state")); }

  // PUT .../state: { created, body } (created for 201, replaced for 200).
  async importState(name, doc) {
    const { resp } = await this.request("PUT", Client.path(name, "/state"), { json: doc });
    const text = await resp.text();
    return { created: resp.status === 201, body: text ? JSON.parse(text) : null };
  }
}

// One worker of a session created with aggregate: { workers: N, ... }:
//
//   const w = await client.worker("model", "w0");   // fetches the parameters
//   for (const batch of batches) {
//     const { grad, loss } = compute(w.params, batch);
//     await w.push(grad, { loss });                  // w.step, w.params: the next ones
//   }
//
// push() contributes the gradient for (name, w.step) and resolves once the
// worker has parameters newer than those the gradient came from: on 200 the
// round's; on 202 (round still open) it long-polls GET .../params?min_step=
// c+1&wait=..., and when a poll ends without the round sends the same
// contribution again (it replaces the pending one, or rebuilds the round
// after a restart lost it); on 409 step_mismatch (stale, or a backup the
// round did not need) it fetches the current parameters and goes on
// (counted in `refused`).  Every send is keyed by (name, step): any repeat,
// by the client's retries or by calling push again with the same gradient
// after an error, is replaced or refused, never counted twice.
export class Worker {
  // options: wait (seconds a request waits for its round, default 60),
  // binary (fetch the parameters as a typed array; a typed gradient sets it).
  constructor(client, session, name, { wait = 60, binary = false } = {}) {
    this.client = client;
    this.session = session;
    this.name = name;
    this.wait = wait;
    this.binary = binary;
    this.step = null;
    this.params = null;
    this.pushes = 0;
    this.applied = 0;
    this.refused = 0;
    this.pending = 0;
  }

  async pull({ minStep, wait } = {}) {
    const p = await this.client.params(this.session, { binary: this.binary, minStep, wait });
    this.step = p.step;
    this.params = p.params;
    return p;
  }

  // Resolves true if the gradient went into a round, false if it was
  // refused as stale.
  async push(gradient, { loss } = {}) {
    this.pushes++;
    this.binary = isTyped(gradient);
    const step = this.step;
    let wasPending = false;
    for (;;) {
      let r;
      try {
        r = await this.client.contribute(this.session, this.name, step, gradient, { loss, wait: this.wait });
      } catch (e) {
        if (!(e instanceof OptdError) || e.code !== "step_mismatch") throw e;
        await this.pull();
        // Sent again (after a 202, or by a retry after a lost answer) and
        // refused: the round holding this gradient was applied in between.
        if (wasPending || e.attempts > 0) {
          this.applied++;
          return true;
        }
        this.refused++;
        return false;
      }
      if (r.applied) {
        this.step = r.step;
        this.params = r.params;
        this.applied++;
        return true;
      }
      this.pending++;
      wasPending = true;
      const target = (r.step ?? step) + 1;
      const p = await this.client.params(this.session, { binary: this.binary, minStep: target, wait: this.wait });
      if (p.step >= target) {
        this.step = p.step;
        this.params = p.params;
        this.applied++;
        return true;
      }
      // Still open after a whole wait: send again.
    }
  }
}

// Every session of several replicas (clients talking to each replica
// directly), merged in name order.
export async function listAcross(clients, options = {}) {
  const all = [];
  for (const c of clients) for await (const d of c.iterSessions(options)) all.push(d);
  return all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
