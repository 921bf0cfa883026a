#!/usr/bin/python3
"""bench_http.py: optd over HTTP, next to floors and peers measured in the
same run (issue 5's targets).  Run by tests/bench/run.sh (`make bench`),
which builds what it needs; prints Markdown sections on stdout and appends
summary rows to $OPTD_BENCH_SUMMARY (see benchlib.py).

Every figure is the median of several runs, and the runs of a figure and
of its floor are interleaved (A B A B ...) so that a noisy neighbour on a
shared machine slows both alike.

  small steps    wrk -t2 -c16 (keep-alive, a Lua script posting a
                 10-element JSON step) against optd (one session, and 1000
                 sessions round-robin), the minimal libmicrohttpd server
                 (tests/bench/mhd_floor.c, same thread mode and count) and
                 nginx `return 200` (if installed; same worker count).
                 9 rounds, each running every server back to back (order
                 reversed every other round); ratios are the median of the
                 per-round ratios, so drift between rounds cancels out.
  latency        p99 at half of optd's maximum rate, measured with
                 tests/bench/loadgen.c in open loop (wrk2 is not in Debian):
                 requests are scheduled at a fixed rate over 16 keep-alive
                 connections and timed from their scheduled start.  The
                 floor and nginx get the same offered rate.
  1M JSON        a 1M-element float64 JSON step end to end (post the body,
                 read the 1M updated params) against bench_numfloor: a
                 strtod loop over the same text plus a %.17g printing loop.
  1M binary      a 1M-element float32 binary step end to end against the
                 MHD floor echoing the same bytes.
  100k sessions  100,000 sessions of 10 params created over HTTP (loadgen,
                 16 connections, closed loop): time and VmRSS.
  threads        large binary steps (1M and 4M float32 adam, ?return=none)
                 end to end on optd --threads 2 against --threads 1, for
                 reference (the update alone: bench_threads.c), and a 1M
                 float64 JSON step (parse, update and print all split).

Usage: bench_http.py [--quick]   (BUILD=dir in the environment)"""

import argparse
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (BUILD, Client, Server, fmt, free_port, log, spread, start_optd,  # noqa: E402
                      stats, summary_row, wait_port)

NPROC = os.cpu_count() or 1
BIN = os.path.join(BUILD, "bench")
LOADGEN = os.path.join(BIN, "loadgen")
MHD_FLOOR = os.path.join(BIN, "mhd_floor")
NUMFLOOR = os.path.join(BIN, "bench_numfloor")
GRAD10 = ("{\"gradient\":[0.012345678901234567,-0.23456789012345678,0.034567890123456789,"
          "-0.45678901234567891,0.056789012345678901,-0.67890123456789012,0.078901234567890123,"
          "-0.89012345678901234,0.090123456789012345,-0.10123456789012346]}")
PARAMS10 = "[0.5,-1.25,3.0,0.125,-0.75,2.5,1.0,-2.0,0.25,0.0625]"


def ratio_text(r):
    return f"{r:.2f}×"


# ---- servers ---------------------------------------------------------------------------------

def start_floor(tmp, threads):
    port = free_port()
    srv = Server(f"mhd_floor {threads}", [MHD_FLOOR, str(port), str(threads)], port,
                 os.path.join(tmp, "mhd_floor.log"))
    wait_port(port, srv.proc, "mhd_floor")
    return srv


def find_nginx():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    return None


def start_nginx(tmp, workers):
    """nginx `return 200` with the body the MHD floor answers, in a temporary
    prefix, in the foreground.  Its access log stays on (nginx's default;
    optd logs every request too)."""
    nginx = find_nginx()
    if not nginx:
        return None
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    port = free_port()
    body = '{"step":1,"params":[0.49000000000000005,-1.24,2.9900000000000002]}'
    conf = os.path.join(prefix, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}
}}
""")
    srv = Server("nginx", [nginx, "-p", prefix, "-c", conf], port, os.path.join(prefix, "stderr.log"))
    try:
        wait_port(port, srv.proc, "nginx")
    except RuntimeError as e:
        log(f"nginx not used: {e}")
        srv.stop()
        return None
    return srv


# ---- load tools ------------------------------------------------------------------------------

def wrk_script(tmp, sessions):
    """A wrk Lua script posting GRAD10 to /v1/sessions/s<i>/step, i walking
    0..sessions-1 round-robin (each wrk thread from its own offset)."""
    path = os.path.join(tmp, f"step{sessions}.lua")
    with open(path, "w") as f:
        f.write(f"""
local sessions = {sessions}
local counter = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
function init(args)
  counter = offset or 0
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{GRAD10}'
function request()
  local path = "/v1/sessions/s" .. (counter % sessions) .. "/step"
  counter = counter + 1
  return wrk.format(nil, path)
end
""")
    return path


def run_wrk(port, script, seconds):
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", script,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {out.stdout}{out.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out.stdout)
    if bad and int(bad.group(1)) > 0:
        raise RuntimeError(f"wrk saw {bad.group(1)} error answers:\n{out.stdout}")
    return float(m.group(1))


def loadgen(port, *args, check=True):
    """Runs loadgen; returns its key=value line as a dict of floats."""
    out = subprocess.run([LOADGEN, *map(str, args), "127.0.0.1", str(port)], capture_output=True,
                         text=True, timeout=600)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    res = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}
    if check and (out.returncode != 0 or "requests" not in res):
        raise RuntimeError(f"loadgen {' '.join(map(str, args))} failed: {out.stdout}{out.stderr}")
    return res


def create_sessions(port, prefix, count, optimizer="adam", conns=16):
    """count sessions <prefix>0.. of 10 float64 params, over HTTP; returns loadgen's result."""
    body = '{"name":"' + prefix + '%d","optimizer":"' + optimizer + '","params":' + PARAMS10 + '}'
    return loadgen(port, "-c", conns, "-n", count, "-R", 0, "-m", "POST", "-p", "/v1/sessions", "-b", body)


# ---- the benchmarks --------------------------------------------------------------------------

def bench_small_steps(tmp, runs, seconds):
    print("### Small JSON steps: throughput and latency\n")
    optd = start_optd(tmp, NPROC)
    floor = start_floor(tmp, NPROC)
    nginx = start_nginx(tmp, NPROC)
    try:
        create_sessions(optd.port, "s", 1000)
        s1 = wrk_script(tmp, 1)
        s1000 = wrk_script(tmp, 1000)
        # The floors get the same script (a path and a 10-element body).
        targets = [("optd, 1 session", optd.port, s1), ("optd, 1000 sessions", optd.port, s1000),
                   ("MHD floor", floor.port, s1)]
        if nginx:
            targets.append(("nginx return 200", nginx.port, s1))
        rps = {t[0]: [] for t in targets}
        run_wrk(optd.port, s1000, 1)  # warm-up: first touch of the sessions, caches
        # The machine's speed drifts by tens of percent from second to second
        # (shared cores), so each round measures every server back to back,
        # in an order reversed every other round, and a ratio is the median
        # of the per-round ratios: drift between rounds cancels out.
        for r in range(runs):
            for name, port, script in (targets if r % 2 == 0 else targets[::-1]):
                rps[name].append(run_wrk(port, script, seconds))
            log(f"wrk round {r + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rps.items()))

        # Latency: open loop at half optd's (one-session) max rate, same rate for all.
        rate = stats(rps["optd, 1 session"])[0] / 2
        lat_targets = [("optd, 1 session", optd.port, 1), ("optd, 1000 sessions", optd.port, 1000),
                       ("MHD floor", floor.port, 1)]
        if nginx:
            lat_targets.append(("nginx return 200", nginx.port, 1))
        p99 = {t[0]: [] for t in lat_targets}
        p50 = {t[0]: [] for t in lat_targets}
        lat_runs = runs
        for r in range(lat_runs):
            for name, port, mod in (lat_targets if r % 2 == 0 else lat_targets[::-1]):
                res = loadgen(port, "-c", 16, "-R", f"{rate:.0f}", "-d", seconds, "-w", 1, "-m", "POST",
                              "-p", "/v1/sessions/s%d/step", "-M", mod, "-b", GRAD10)
                p99[name].append(res["p99_ms"])
                p50[name].append(res["p50_ms"])
            log(f"latency round {r + 1}/{lat_runs} at {rate:,.0f}/s: "
                + ", ".join(f"{k} p99 {v[-1]:.2f} ms" for k, v in p99.items()))
    finally:
        for s in (optd, floor, nginx):
            if s:
                s.stop()

    fl = stats(rps["MHD floor"])[0]
    ng = stats(rps["nginx return 200"])[0] if nginx else None

    def paired(name, peer):
        """Median and range of name's steps/s over peer's, round by round."""
        rs = [a / b for a, b in zip(rps[name], rps[peer])]
        return statistics.median(rs), min(rs), max(rs)
    print(f"wrk -t2 -c16 -d{seconds}s, keep-alive, POST of a 10-element float64 JSON step "
          f"(adam); median of {runs} runs, interleaved.  optd --threads {NPROC} (info log to a file), "
          f"MHD floor with {NPROC} threads, nginx with {NPROC} workers.\n")
    print("Ratios are the median of the per-round ratios (each round runs every server back to "
          "back, the order reversed every other round), with their range.\n")
    print("| server | steps/s | min–max | ÷ MHD floor | range | ÷ nginx | range |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, v in rps.items():
        rf = paired(name, "MHD floor")
        rn = paired(name, "nginx return 200") if ng else None
        print(f"| {name} | {fmt(stats(v)[0])} | {spread(v)} | {ratio_text(rf[0])} | "
              f"{rf[1]:.2f}–{rf[2]:.2f} | {ratio_text(rn[0]) if rn else '—'} | "
              f"{f'{rn[1]:.2f}–{rn[2]:.2f}' if rn else '—'} |")
    print()
    print(f"Latency at {rate:,.0f} requests/s (half of optd's one-session maximum), open loop: "
          f"tests/bench/loadgen.c schedules requests at that rate over 16 keep-alive connections "
          f"and times each from its scheduled start (as wrk2 would; wrk2 is not in Debian), "
          f"{seconds} s after a 1 s warm-up; median of {lat_runs} runs.\n")
    print("| server | p50 ms | p99 ms | p99 min–max |")
    print("| --- | ---: | ---: | ---: |")
    for name in p99:
        print(f"| {name} | {fmt(stats(p50[name])[0])} | {fmt(stats(p99[name])[0])} | {spread(p99[name])} |")
    print()

    for name in ("optd, 1 session", "optd, 1000 sessions"):
        v = rps[name]
        rf = paired(name, "MHD floor")[0]
        summary_row(f"10-element JSON steps/s, {name.split(', ')[1]}", v, "/s",
                    f"MHD floor {fmt(fl)}/s", ratio_text(rf), "≥ 0.8×", rf >= 0.8)
        if ng:
            rn = paired(name, "nginx return 200")[0]
            summary_row(f"10-element JSON steps/s, {name.split(', ')[1]}", v, "/s",
                        f"nginx {fmt(ng)}/s", ratio_text(rn), "≥ 0.5×", rn >= 0.5)
    for name in ("optd, 1 session", "optd, 1000 sessions"):
        v = p99[name]
        fl99 = stats(p99["MHD floor"])[0]
        summary_row(f"p99 latency at {rate:,.0f}/s (half max), {name.split(', ')[1]}", v, " ms",
                    f"MHD floor {fmt(fl99)} ms", ratio_text(stats(v)[0] / fl99), "< 2 ms",
                    stats(v)[0] < 2.0)


def json_body(n, seed):
    rng = random.Random(seed)
    # Gradients as a training loop would send them: full-precision doubles.
    return ('{"gradient":[' + ",".join(repr(rng.gauss(0, 1e-2)) for _ in range(n)) + "]}").encode()


def bench_big_json(tmp, runs, n):
    print(f"### {n:,}-element float64 JSON step, end to end\n")
    body = json_body(n, 5)
    path = os.path.join(tmp, "grad1m.json")
    with open(path, "wb") as f:
        f.write(body)
    optd = start_optd(tmp, NPROC)
    try:
        c = Client(optd.port)
        st, _, data = c.request("POST", "/v1/sessions",
                                f'{{"name":"big64","optimizer":"adam","dtype":"float64","size":{n}}}')
        assert st == 201, data
        e2e, floor, parse, prnt = [], [], [], []
        for r in range(runs + 1):
            t0 = time.perf_counter()
            st, _, data = c.request("POST", "/v1/sessions/big64/step", body)
            t = (time.perf_counter() - t0) * 1e3
            if st != 200:
                raise RuntimeError(f"1M JSON step: {st} {data[:300]!r}")
            if r == 0:  # warm-up; check the answer once, outside the timing
                import json
                ans = json.loads(data)
                assert len(ans["params"]) == n and ans["step"] == 1, "1M step answer malformed"
                continue
            e2e.append(t)
            out = subprocess.run([NUMFLOOR, path, "1"], capture_output=True, text=True, check=True)
            m = dict(re.findall(r"(\w+)=([0-9.]+)", out.stdout))
            floor.append(float(m["total_ms"]))
            parse.append(float(m["parse_ms"]))
            prnt.append(float(m["print_ms"]))
            log(f"1M JSON round {r}/{runs}: optd {t:.0f} ms, floor {floor[-1]:.0f} ms")
        c.close()
    finally:
        optd.stop()
    med, fl = stats(e2e)[0], stats(floor)[0]
    print(f"POST of {len(body) / 1e6:.1f} MB (adam, float64, 1M values written by Python's repr) and "
          f"the answer's 1M params read back, one keep-alive connection (Python http.client); "
          f"floor: tests/bench/bench_numfloor.c, strtod over the same text then %.17g of the values; "
          f"median of {runs} interleaved runs.\n")
    print("| what | ms | min–max |")
    print("| --- | ---: | ---: |")
    print(f"| optd step, end to end | {fmt(med)} | {spread(e2e)} |")
    print(f"| floor: strtod loop | {fmt(stats(parse)[0])} | {spread(parse)} |")
    print(f"| floor: %.17g loop | {fmt(stats(prnt)[0])} | {spread(prnt)} |")
    print(f"| floor: both | {fmt(fl)} | {spread(floor)} |")
    print(f"| **optd ÷ floor** | {ratio_text(med / fl)} | |")
    print()
    summary_row("1M float64 JSON step, end to end", e2e, " ms", f"strtod + %.17g {fmt(fl)} ms",
                ratio_text(med / fl), "≤ 1.3×", med / fl <= 1.3)


def bench_big_binary(tmp, runs, n):
    print(f"### {n:,}-element float32 binary step, end to end\n")
    rng = random.Random(7)
    grad = struct.pack(f"<{n}f", *(rng.gauss(0, 1e-2) for _ in range(n)))
    optd = start_optd(tmp, NPROC)
    floor = start_floor(tmp, NPROC)
    try:
        c = Client(optd.port)
        st, _, data = c.request("POST", "/v1/sessions",
                                f'{{"name":"big32","optimizer":"adam","dtype":"float32","size":{n}}}')
        assert st == 201, data
        fc = Client(floor.port)
        e2e, echo = [], []
        for r in range(runs + 1):
            t0 = time.perf_counter()
            st, _, data = c.request("POST", "/v1/sessions/big32/step", grad, "application/octet-stream")
            t1 = time.perf_counter()
            if st != 200 or len(data) != 4 * n:
                raise RuntimeError(f"binary step: {st} {len(data)} bytes")
            st, _, data = fc.request("POST", "/echo", grad, "application/octet-stream")
            t2 = time.perf_counter()
            if st != 200 or data != grad:
                raise RuntimeError("MHD floor echo failed")
            if r:
                e2e.append((t1 - t0) * 1e3)
                echo.append((t2 - t1) * 1e3)
        c.close()
        fc.close()
    finally:
        optd.stop()
        floor.stop()
    med, fl = stats(e2e)[0], stats(echo)[0]
    print(f"POST of {4 * n / 1e6:.0f} MB of raw float32 (adam) and the {4 * n / 1e6:.0f} MB of updated "
          f"params read back, one keep-alive connection; floor: the MHD floor server echoing the same "
          f"bytes (same thread mode); median of {runs} interleaved runs.\n")
    print("| what | ms | min–max |")
    print("| --- | ---: | ---: |")
    print(f"| optd binary step | {fmt(med)} | {spread(e2e)} |")
    print(f"| MHD echo | {fmt(fl)} | {spread(echo)} |")
    print(f"| **optd ÷ echo** | {ratio_text(med / fl)} | |")
    print()
    summary_row("1M float32 binary step, end to end", e2e, " ms", f"MHD echo {fmt(fl)} ms",
                ratio_text(med / fl), "≤ 2×", med / fl <= 2.0)


def bench_many_sessions(tmp, runs, count):
    print(f"### {count:,} sessions of 10 parameters\n")
    secs, rss, base = [], [], []
    for r in range(runs):
        optd = start_optd(tmp, NPROC)
        try:
            base.append(optd.rss_kib() / 1024)
            res = create_sessions(optd.port, "c", count)
            if res["requests"] != count:
                raise RuntimeError(f"created {res['requests']:.0f} of {count} sessions")
            secs.append(res["seconds"])
            rss.append(optd.rss_kib() / 1024)
            # A spot check that they are real sessions.
            c = Client(optd.port)
            st, _, _ = c.request("GET", f"/v1/sessions/c{count - 1}")
            assert st == 200
            c.close()
        finally:
            optd.stop()
        log(f"sessions round {r + 1}/{runs}: {secs[-1]:.2f} s, {rss[-1]:.0f} MiB")
    print(f"POST /v1/sessions × {count:,} (adam, 10 float64 params, default --history 1000), "
          f"tests/bench/loadgen.c with 16 keep-alive connections as fast as optd answers; a fresh "
          f"optd --threads {NPROC} per run; resident memory from /proc/PID/status VmRSS after the last "
          f"create; median of {runs} runs.\n")
    print("| what | median | min–max |")
    print("| --- | ---: | ---: |")
    print(f"| creation time | {fmt(stats(secs)[0])} s | {spread(secs, ' s')} |")
    print(f"| creates/s | {fmt(count / stats(secs)[0])} | |")
    print(f"| VmRSS after | {fmt(stats(rss)[0])} MiB | {spread(rss, ' MiB')} |")
    print(f"| VmRSS at start | {fmt(stats(base)[0])} MiB | |")
    print(f"| bytes per session | {fmt((stats(rss)[0] - stats(base)[0]) * 1048576 / count)} | |")
    print()
    summary_row(f"{count // 1000}k sessions × 10 params: VmRSS", rss, " MiB", "—", "—", "< 200 MiB",
                stats(rss)[0] < 200)
    summary_row(f"{count // 1000}k sessions × 10 params: created over HTTP", secs, " s", "—", "—",
                "< 10 s", stats(secs)[0] < 10)


def bench_threads(tmp, runs, sizes):
    print("### Large updates: --threads 2 against --threads 1\n")
    rng = random.Random(11)
    t1 = start_optd(tmp, 1)
    t2 = start_optd(tmp, 2)
    rows = []
    try:
        for n in sizes:
            grad = struct.pack(f"<{n}f", *(rng.gauss(0, 1e-2) for _ in range(n)))
            times = {}
            for srv in (t1, t2):
                c = Client(srv.port)
                st, _, data = c.request(
                    "POST", "/v1/sessions",
                    f'{{"name":"t{n}","optimizer":"adam","dtype":"float32","size":{n}}}')
                assert st == 201, data
                c.close()
            clients = {srv.port: Client(srv.port) for srv in (t1, t2)}
            for r in range(runs + 1):
                for srv in (t1, t2):
                    c = clients[srv.port]
                    t0 = time.perf_counter()
                    st, _, data = c.request("POST", f"/v1/sessions/t{n}/step?return=none", grad,
                                            "application/octet-stream")
                    t = (time.perf_counter() - t0) * 1e3
                    if st != 200:
                        raise RuntimeError(f"step: {st} {data[:200]!r}")
                    if r:
                        times.setdefault(srv.port, []).append(t)
            for c in clients.values():
                c.close()
            rows.append((n, times[t1.port], times[t2.port]))
    finally:
        t1.stop()
        t2.stop()
    print(f"One binary float32 adam step with ?return=none (the body in, no params out), one client; "
          f"median of {runs} interleaved runs.\n")
    print("| params | --threads 1 ms | min–max | --threads 2 ms | min–max | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, a, b in rows:
        print(f"| {n:,} | {fmt(stats(a)[0])} | {spread(a)} | {fmt(stats(b)[0])} | {spread(b)} | "
              f"{ratio_text(stats(a)[0] / stats(b)[0])} |")
    print()
    print("Over HTTP the update is the smaller part of a big binary step (the body in costs more, and "
          "is the same whatever --threads); the update itself is timed in-process by bench_threads.\n")
    json_rows = bench_threads_json(tmp, runs + 4, 1000000)
    for n, a, b in rows:
        sp = stats(a)[0] / stats(b)[0]
        summary_row(f"{n // 1000000}M float32 binary step end to end, --threads 2 (for reference)", b,
                    " ms", f"--threads 1 {fmt(stats(a)[0])} ms", f"{sp:.2f}× faster", "—", None)
    for n, a, b, sp, fl in json_rows:
        summary_row(f"{n // 1000000}M float64 JSON step end to end, --threads 2", b, " ms",
                    f"--threads 1 {fmt(stats(a)[0])} ms (2-core floor of this work: {fl:.2f}× faster)",
                    f"{sp:.2f}× faster", "≥ 1.6× faster", sp >= 1.6)


def numfloor_ms(path, copies):
    """bench_numfloor's total time over the file, `copies` processes at
    once (the slowest of them)."""
    procs = [subprocess.Popen([NUMFLOOR, path, "1"], stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    worst = 0.0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError("bench_numfloor failed")
        worst = max(worst, float(dict(re.findall(r"(\w+)=([0-9.]+)", out))["total_ms"]))
    return worst


def bench_threads_json(tmp, runs, n):
    """A big JSON step, where the gradient's parse and the params' print
    are split over the threads as well as the update.  The machine's own
    limit, measured in the same rounds: bench_numfloor's parse-and-print
    alone against two copies of it at once (on two cores that scale
    perfectly, each copy takes as long as one alone; the speed-up a perfect
    split could reach is 2 × alone ÷ pair)."""
    body = json_body(n, 13)
    path = os.path.join(tmp, f"gradthreads{n}.json")
    with open(path, "wb") as f:
        f.write(body)
    t1 = start_optd(tmp, 1)
    t2 = start_optd(tmp, 2)
    times = {}
    ratios, floor = [], []
    try:
        clients = {}
        for srv in (t1, t2):
            c = Client(srv.port)
            st, _, data = c.request(
                "POST", "/v1/sessions", f'{{"name":"j{n}","optimizer":"adam","dtype":"float64","size":{n}}}')
            assert st == 201, data
            clients[srv.port] = c
        for r in range(runs + 1):
            answers, this = {}, {}
            for srv in ((t1, t2) if r % 2 == 0 else (t2, t1)):
                c = clients[srv.port]
                t0 = time.perf_counter()
                st, _, data = c.request("POST", f"/v1/sessions/j{n}/step", body)
                this[srv.port] = (time.perf_counter() - t0) * 1e3
                if st != 200:
                    raise RuntimeError(f"step: {st} {data[:200]!r}")
                answers[srv.port] = data
            if answers[t1.port] != answers[t2.port]:
                raise RuntimeError("--threads 1 and --threads 2 answered different params")
            if r == 0:
                continue  # warm-up
            for port, t in this.items():
                times.setdefault(port, []).append(t)
            ratios.append(this[t1.port] / this[t2.port])
            floor.append(2 * numfloor_ms(path, 1) / numfloor_ms(path, 2))
            log(f"threads JSON round {r}/{runs}: --threads 1 {this[t1.port]:.0f} ms, --threads 2 "
                f"{this[t2.port]:.0f} ms ({ratios[-1]:.2f}x); machine's 2-core floor {floor[-1]:.2f}x")
        for c in clients.values():
            c.close()
    finally:
        t1.stop()
        t2.stop()
    a, b = times[t1.port], times[t2.port]
    print(f"One {n:,}-element float64 JSON adam step (the body from Python's repr in, the {n:,} updated "
          f"params out), one keep-alive client; the two daemons take turns, order reversed every other "
          f"round, and each round's two answers are checked to be the same bytes; {runs} rounds, the "
          f"speed-up is the median of the per-round ratios.  Here --threads splits the gradient's parse "
          f"and the params' print as well as the update.  Machine floor, in the same rounds: what two "
          f"cores give plain C doing the same parsing and printing (tests/bench/bench_numfloor.c, one "
          f"copy alone against two at once: 2 × alone ÷ pair).\n")
    print("| params | --threads 1 ms | min–max | --threads 2 ms | min–max | speed-up | min–max | "
          "machine floor |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {n:,} | {fmt(stats(a)[0])} | {spread(a)} | {fmt(stats(b)[0])} | {spread(b)} | "
          f"{ratio_text(stats(ratios)[0])} | {min(ratios):.2f}–{max(ratios):.2f} | "
          f"{ratio_text(stats(floor)[0])} |")
    print()
    return [(n, a, b, stats(ratios)[0], stats(floor)[0])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter runs (a smoke test)")
    ap.add_argument("--only", help="comma-separated parts: small,json,binary,sessions,threads")
    a = ap.parse_args()
    for tool in (LOADGEN, MHD_FLOOR, NUMFLOOR, os.path.join(BUILD, "optd")):
        if not os.access(tool, os.X_OK):
            sys.exit(f"bench_http.py: {tool} is missing (run through make bench)")
    if not shutil.which("wrk"):
        sys.exit("bench_http.py: wrk is missing (deploy/install-deps.sh bench)")
    parts = set((a.only or "small,json,binary,sessions,threads").split(","))
    quick = a.quick or os.environ.get("OPTD_BENCH_QUICK") == "1"
    runs = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="optd-bench-") as tmp:
        if "small" in parts:
            bench_small_steps(tmp, 3 if quick else 9, 2 if quick else 3)
        if "json" in parts:
            bench_big_json(tmp, runs, 1000000)
        if "binary" in parts:
            bench_big_binary(tmp, runs + 2, 1000000)
        if "sessions" in parts:
            bench_many_sessions(tmp, 1 if quick else 3, 100000)
        if "threads" in parts:
            bench_threads(tmp, runs + 2, [1000000, 4000000])


if __name__ == "__main__":
    main()
