#!/bin/sh
# image-test.sh: proves deploy/Dockerfile without a Docker engine.
#
#   deploy/image-test.sh            (as root; `make image-test` installs debootstrap)
#
# Makes a Debian 12 root with `debootstrap --variant=minbase bookworm` (the
# stand-in for debian:12-slim; cached under build/image-test/base), then
# reads deploy/Dockerfile and carries out its instructions stage by stage in
# copies of that root: FROM starts a stage, RUN runs in the stage's root
# (chroot, /bin/sh -c, with the image's ENV and WORKDIR), COPY copies from
# the repository (the build context) or from an earlier stage (--from),
# WORKDIR/ENV/USER/ENTRYPOINT/CMD/EXPOSE/VOLUME/HEALTHCHECK/STOPSIGNAL are
# recorded.  Then it runs the final stage as `docker run` would: the
# ENTRYPOINT as the image's USER, as PID 1 of a new PID namespace, with the
# image's ENV (plus OPTD_LISTEN pointing at a free loopback port, since the
# root shares the host's network), and checks:
#   - the runtime root has no compiler, and the binary's libraries resolve;
#   - the daemon answers GET /healthz, and the image's own HEALTHCHECK
#     command (run inside the root, as the image's user) passes;
#   - a session can be created and stepped; the process runs as non-root;
#   - SIGTERM to PID 1 stops it with exit 0 (what `docker stop` does);
#   - started again on the same volume, the session is still there.
# Prints "image-test: PASS" and exits 0, or says what failed and exits 1.
#
# Env: IMAGE_TEST_DIR (default build/image-test), DEBIAN_MIRROR (default
# http://deb.debian.org/debian), IMAGE_TEST_FRESH=1 (debootstrap again).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "image-test.sh: needs root (debootstrap, chroot, mount)" >&2
    exit 1
fi
for tool in debootstrap chroot unshare mount; do
    command -v "$tool" >/dev/null 2>&1 || { echo "image-test.sh: $tool is missing (deploy/install-deps.sh image)" >&2; exit 1; }
done
exec /usr/bin/python3 - "$@" <<'PY'
import json, os, re, shlex, shutil, signal, socket, subprocess, sys, time, urllib.request

REPO = os.getcwd()
WORK = os.path.abspath(os.environ.get("IMAGE_TEST_DIR", "build/image-test"))
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
DOCKERFILE = os.path.join(REPO, "deploy", "Dockerfile")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
mounted = []


def log(msg):
    print("image-test: " + msg, flush=True)


def fail(msg):
    log("FAIL: " + msg)
    cleanup()
    sys.exit(1)


def run(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def mount_for_run(root):
    for src, dst, opts in (("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--bind"]),
                           ("/dev/pts", "dev/pts", ["--bind"])):
        target = os.path.join(root, dst)
        os.makedirs(target, exist_ok=True)
        run(["mount"] + opts + [src, target])
        mounted.append(target)


def unmount_all():
    while mounted:
        subprocess.run(["umount", "-l", mounted.pop()], check=False)


procs = []


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    unmount_all()


def base_root():
    base = os.path.join(WORK, "base")
    if os.environ.get("IMAGE_TEST_FRESH") == "1":
        shutil.rmtree(base, ignore_errors=True)
    if os.path.exists(os.path.join(base, ".image-test-complete")):
        log("reusing the Debian 12 root in %s" % base)
        return base
    tmp = base + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    log("debootstrap --variant=minbase bookworm (a few minutes)")
    run(["debootstrap", "--variant=minbase", "bookworm", tmp, MIRROR],
        stdout=subprocess.DEVNULL)
    # What Debian's container images add: no service starts inside.
    with open(os.path.join(tmp, "usr/sbin/policy-rc.d"), "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(os.path.join(tmp, "usr/sbin/policy-rc.d"), 0o755)
    open(os.path.join(tmp, ".image-test-complete"), "w").close()
    os.rename(tmp, base)
    return base


def instructions(path):
    """(KEYWORD, rest-of-line) for each instruction, continuations joined."""
    out, cur = [], ""
    for line in open(path):
        s = line.rstrip("\n")
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if cur and s.lstrip().startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        kw, _, rest = cur.strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        cur = ""
    return out


def parse_env(rest, env):
    if "=" not in rest.split()[0]:
        k, _, v = rest.partition(" ")
        env[k] = v.strip()
        return
    for tok in shlex.split(rest):
        k, _, v = tok.partition("=")
        env[k] = v


def exec_form(rest):
    rest = rest.strip()
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


class Stage:
    def __init__(self, index, name, root):
        self.index, self.name, self.root = index, name, root
        self.env = {"PATH": DEFAULT_PATH}
        self.workdir = "/"
        self.user = "root"
        self.entrypoint, self.cmd, self.health, self.volumes = [], [], None, []
        self.expose, self.stopsignal = [], "SIGTERM"


def chroot_env(stage, extra=None):
    env = dict(stage.env)
    env.setdefault("HOME", "/root")
    env.update(extra or {})
    return ["/usr/bin/env", "-i"] + ["%s=%s" % kv for kv in env.items()]


def do_copy(stage, rest, stages):
    args = shlex.split(rest)
    src_root = REPO
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt.startswith("--from="):
            ref = opt.split("=", 1)[1]
            src_root = next(s.root for s in stages if s.name == ref or str(s.index) == ref)
        elif opt.startswith("--chown=") or opt.startswith("--chmod="):
            fail("COPY %s is not supported by image-test.sh" % opt)
    *srcs, dest = args
    if not dest.startswith("/"):
        dest = os.path.join(stage.workdir, dest)
    into_dir = dest.endswith("/") or len(srcs) > 1
    for src in srcs:
        s = os.path.join(src_root, src.lstrip("/")) if src_root != REPO else os.path.join(REPO, src)
        d = os.path.join(stage.root, dest.lstrip("/"))
        if os.path.isdir(s):
            shutil.copytree(s, d, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            if into_dir or os.path.isdir(d):
                os.makedirs(d, exist_ok=True)
                d = os.path.join(d, os.path.basename(s))
            else:
                os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy2(s, d)


def build(base):
    stages = []
    stage = None
    for kw, rest in instructions(DOCKERFILE):
        if kw == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            image, name = m.group(1), m.group(2)
            if not re.match(r"debian:(12|bookworm)", image):
                fail("FROM %s: image-test.sh only stands in for Debian 12 images" % image)
            unmount_all()
            root = os.path.join(WORK, "stage%d" % len(stages))
            if os.path.exists(root):
                run(["rm", "-rf", "--one-file-system", root])
            log("FROM %s%s -> copy of the debootstrapped root" % (image, " AS " + name if name else ""))
            run(["cp", "-a", base, root])
            with open(os.path.join(root, "etc/resolv.conf"), "w") as f:
                f.write(open("/etc/resolv.conf").read())
            stage = Stage(len(stages), name, root)
            stages.append(stage)
            mount_for_run(root)
        elif kw == "RUN":
            log("RUN %s" % (rest[:110] + ("..." if len(rest) > 110 else "")))
            argv = exec_form(rest)
            if argv[:2] == ["/bin/sh", "-c"]:
                argv = ["/bin/sh", "-c", "cd %s && %s" % (shlex.quote(stage.workdir), argv[2])]
            r = subprocess.run(["chroot", stage.root] + chroot_env(stage) + argv,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                sys.stdout.write(r.stdout.decode("utf-8", "replace")[-6000:])
                fail("RUN exited %d" % r.returncode)
        elif kw == "COPY":
            log("COPY %s" % rest)
            do_copy(stage, rest, stages)
        elif kw == "WORKDIR":
            stage.workdir = os.path.join(stage.workdir, rest)
            os.makedirs(os.path.join(stage.root, stage.workdir.lstrip("/")), exist_ok=True)
        elif kw == "ENV":
            parse_env(rest, stage.env)
        elif kw == "USER":
            stage.user = rest
        elif kw == "ENTRYPOINT":
            stage.entrypoint = exec_form(rest)
        elif kw == "CMD":
            stage.cmd = exec_form(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        elif kw == "VOLUME":
            stage.volumes = json.loads(rest) if rest.startswith("[") else rest.split()
        elif kw == "EXPOSE":
            stage.expose = rest.split()
        elif kw == "STOPSIGNAL":
            stage.stopsignal = rest
        elif kw == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", rest)
            stage.health = exec_form(m.group(1)) if m else None
        elif kw in ("LABEL", "ARG", "SHELL", "ONBUILD"):
            fail("%s is not supported by image-test.sh" % kw)
        else:
            fail("unknown instruction %s" % kw)
    unmount_all()
    return stages


def uid_gid(root, user):
    name, _, group = user.partition(":")
    for line in open(os.path.join(root, "etc/passwd")):
        f = line.split(":")
        if f[0] == name or f[2] == name:
            uid, gid = int(f[2]), int(f[3])
            break
    else:
        fail("USER %s is not in the image's /etc/passwd" % user)
    if group:
        for line in open(os.path.join(root, "etc/group")):
            f = line.split(":")
            if f[0] == group or f[2] == group:
                gid = int(f[2])
    return uid, gid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, port, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Container:
    """The final stage run as `docker run -e OPTD_LISTEN=...` would."""

    def __init__(self, stage, port):
        self.stage, self.port = stage, port
        self.uid, self.gid = uid_gid(stage.root, stage.user)
        self.env_extra = {"OPTD_LISTEN": "127.0.0.1:%d" % port, "HOME": "/"}

    def start(self):
        st = self.stage
        argv = (["unshare", "--pid", "--fork", "--mount-proc=%s/proc" % st.root, "--",
                 "chroot", "--userspec=%d:%d" % (self.uid, self.gid), st.root]
                + chroot_env(st, self.env_extra) + st.entrypoint + st.cmd)
        self.log = open(os.path.join(WORK, "optd.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        procs.append(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail("the daemon exited %s at start; see %s/optd.log" % (self.proc.returncode, WORK))
            try:
                if http("GET", self.port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            fail("no answer on /healthz within 30 s")
        # PID 1 of the namespace: the child of unshare's fork.
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            self.pid1 = int(f.read().split()[0])

    def exe_status(self):
        status = open("/proc/%d/status" % self.pid1).read()
        nspid = re.search(r"NSpid:\s+(.*)", status).group(1).split()
        uid = int(re.search(r"Uid:\s+(\d+)", status).group(1))
        return os.readlink("/proc/%d/exe" % self.pid1), nspid[-1], uid

    def healthcheck(self):
        st = self.stage
        r = subprocess.run(["chroot", "--userspec=%d:%d" % (self.uid, self.gid), st.root]
                           + chroot_env(st, self.env_extra) + st.health,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def stop(self):
        sig = getattr(signal, self.stage.stopsignal)
        os.kill(self.pid1, sig)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("PID 1 did not exit within 10 s of %s" % self.stage.stopsignal)
        self.log.close()
        return code


def main():
    os.makedirs(WORK, exist_ok=True)
    t0 = time.monotonic()
    base = base_root()
    stages = build(base)
    final = stages[-1]
    log("built %d stages in %.0f s" % (len(stages), time.monotonic() - t0))
    binary = final.entrypoint[0]
    r = subprocess.run(["chroot", final.root, "/bin/sh", "-c", "command -v gcc cc make || true"],
                       stdout=subprocess.PIPE)
    if r.stdout.strip():
        fail("the runtime stage has build tools: %s" % r.stdout.decode().split())
    r = subprocess.run(["chroot", final.root, "ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0 or b"not found" in r.stdout:
        fail("libraries of %s do not resolve in the runtime root:\n%s" % (binary, r.stdout.decode()))
    log("runtime root: no compiler; %s links %d libraries, all present"
        % (binary, len(r.stdout.splitlines())))
    if not final.health:
        fail("the Dockerfile has no HEALTHCHECK")
    for vol in final.volumes:
        for name in os.listdir(os.path.join(final.root, vol.lstrip("/"))):
            os.remove(os.path.join(final.root, vol.lstrip("/"), name))

    port = free_port()
    c = Container(final, port)
    c.start()
    exe, nspid, uid = c.exe_status()
    if nspid != "1":
        fail("the daemon is not PID 1 of its namespace (pid %s)" % nspid)
    if uid == 0:
        fail("the daemon runs as root")
    log("daemon %s answers /healthz on port %d as PID 1, uid %d (USER %s)"
        % (exe, port, uid, final.user))
    code, out = c.healthcheck()
    if code != 0:
        fail("the image's HEALTHCHECK command failed (%d): %s" % (code, out))
    log("the Dockerfile's HEALTHCHECK command passes inside the root")
    status, body = http("PUT", port, "/v1/sessions/image-test",
                        {"optimizer": "sgd", "params": [1.0, 2.0], "hyperparameters": {"lr": 0.5}})
    if status != 201:
        fail("create answered %s %s" % (status, body))
    status, body = http("POST", port, "/v1/sessions/image-test/step", {"gradient": [1.0, -1.0], "step": 0})
    if status != 200 or body != {"step": 1, "params": [0.5, 2.5]}:
        fail("step answered %s %s" % (status, body))
    log("created a session and stepped it: %s" % json.dumps(body))
    code = c.stop()
    if code != 0:
        fail("SIGTERM to PID 1: exit %s, want 0" % code)
    log("SIGTERM to PID 1: clean exit 0")
    code, out = c.healthcheck()
    if code == 0:
        fail("the HEALTHCHECK command passes with the daemon stopped")
    log("with the daemon stopped the HEALTHCHECK command fails (%d), as it must" % code)
    files = os.listdir(os.path.join(final.root, final.volumes[0].lstrip("/"))) if final.volumes else []
    c = Container(final, port)
    c.start()
    status, body = http("GET", port, "/v1/sessions/image-test/params")
    c.stop()
    if status != 200 or body != {"step": 1, "params": [0.5, 2.5]}:
        fail("after a restart on the same volume the session is %s %s (volume holds %s)"
             % (status, body, files))
    log("restarted on the same volume %s (%d files): session kept at step 1"
        % (final.volumes[0], len(files)))
    cleanup()
    log("PASS (%.0f s)" % (time.monotonic() - t0))


try:
    main()
finally:
    cleanup()
PY
