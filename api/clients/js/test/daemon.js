// daemon.js: the optd the JS tests talk to (client.test.js, worker.test.js).
//
// OPTD_URL (and OPTD_TOKEN) name a running daemon.  Without OPTD_URL,
// useDaemon() starts one from OPTD_BIN (default build/optd) on a free
// loopback port before the file's tests, and stops it after them with
// SIGTERM, asserting it exits 0.  (Run by `node --test` too: it has no
// tests of its own.)
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// { base, token }: base is set once the daemon answers /healthz.
export function useDaemon() {
  const d = { base: process.env.OPTD_URL, token: process.env.OPTD_TOKEN || undefined };
  let child = null;
  before(async () => {
    if (d.base) return;
    const bin = path.resolve(repo, process.env.OPTD_BIN || "build/optd");
    const port = await freePort();
    child = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--log-level", "warn"], { stdio: ["ignore", "ignore", "inherit"] });
    d.base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 200; i++) {
      try { if ((await fetch(d.base + "/healthz")).ok) return; } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`optd at ${bin} did not answer /healthz`);
  });
  after(async () => {
    if (!child) return;
    const exited = new Promise((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0, "optd exits 0 on SIGTERM");
  });
  return d;
}
