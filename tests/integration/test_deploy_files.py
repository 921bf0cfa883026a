"""test_deploy_files.py: the deployment files are valid, not merely present.

- deploy/optd.service passes `systemd-analyze verify` (with ExecStart
  pointed at the built daemon) with no warning, and has the hardening;
- deploy/k8s/*.yaml parse and have what a StatefulSet deployment needs
  (a volume per replica, probes on /healthz, resource requests, Services),
  and the proxy's nginx config keeps deploy/nginx's map and hash;
- deploy/compose.yaml parses and has the volume, healthcheck and restart;
- deploy/Dockerfile is multi-stage on Debian 12 and has the instructions
  the image contract needs; its non-root runtime is proved by image-test.sh;
- deploy/nginx/optd-shards.conf passes `nginx -t`.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import REPO, optd_bin

try:
    import yaml
except ImportError:
    yaml = None

DEPLOY = os.path.join(REPO, "deploy")


def read(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return f.read()


class SystemdUnit(unittest.TestCase):
    def unit(self):
        fields = {}
        section = None
        for line in read("optd.service").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            fields.setdefault((section, k), []).append(v)
        return fields

    def test_hardening(self):
        u = self.unit()
        want = {"DynamicUser": "yes", "StateDirectory": "optd", "ProtectSystem": "strict",
                "NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "RestrictNamespaces": "yes",
                "MemoryDenyWriteExecute": "yes", "KillSignal": "SIGTERM"}
        for k, v in want.items():
            self.assertEqual(u.get(("Service", k)), [v], k)
        self.assertIn(("Service", "CapabilityBoundingSet"), u)
        self.assertIn("OPTD_DATA_DIR=%S/optd", u[("Service", "Environment")])
        self.assertEqual(u[("Install", "WantedBy")], ["multi-user.target"])

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze missing (install-deps test)")
    def test_systemd_analyze_verify(self):
        binary = optd_bin()
        self.assertTrue(os.access(binary, os.X_OK), "no daemon at %s" % binary)
        text = read("optd.service").replace("/usr/local/bin/optd", binary)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "optd.service")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run(["systemd-analyze", "verify", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            out = r.stdout.decode("utf-8", "replace")
            self.assertEqual(r.returncode, 0, out)
            # verify exits 0 on unknown keys and bad values; it only warns.
            ours = [l for l in out.splitlines() if "optd.service" in l]
            self.assertEqual(ours, [], out)

            # The check can fail: a bad value is reported.
            with open(path, "w") as f:
                f.write(text.replace("ProtectSystem=strict", "ProtectSystem=bogus"))
            r = subprocess.run(["systemd-analyze", "verify", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            self.assertIn("optd.service", r.stdout.decode("utf-8", "replace"))


@unittest.skipIf(yaml is None, "python3-yaml missing")
class Kubernetes(unittest.TestCase):
    def docs(self):
        out = {}
        for name in sorted(os.listdir(os.path.join(DEPLOY, "k8s"))):
            if name.endswith(".yaml") and name != "kustomization.yaml":
                for doc in yaml.safe_load_all(read("k8s", name)):
                    self.assertIn("apiVersion", doc, name)
                    self.assertIn("kind", doc, name)
                    self.assertIn("name", doc.get("metadata", {}), name)
                    out[(doc["kind"], doc["metadata"]["name"])] = doc
        return out

    def test_statefulset(self):
        docs = self.docs()
        sts = docs[("StatefulSet", "optd")]
        spec = sts["spec"]
        self.assertGreaterEqual(spec["replicas"], 1)
        self.assertEqual(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
        self.assertIn(("Service", spec["serviceName"]), docs)
        self.assertEqual(docs[("Service", spec["serviceName"])]["spec"]["clusterIP"], "None")
        (c,) = spec["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(c[probe]["httpGet"]["path"], "/healthz", probe)
        self.assertIn("cpu", c["resources"]["requests"])
        self.assertIn("memory", c["resources"]["requests"])
        env = {e["name"]: e["value"] for e in c["env"]}
        self.assertEqual(env["OPTD_DATA_DIR"], "/var/lib/optd")
        self.assertTrue(env["OPTD_LISTEN"].endswith(":8080"))
        self.assertEqual(c["ports"][0]["containerPort"], 8080)
        (claim,) = spec["volumeClaimTemplates"]
        self.assertIn("storage", claim["spec"]["resources"]["requests"])
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts[claim["metadata"]["name"]], "/var/lib/optd")
        self.assertTrue(spec["template"]["spec"]["securityContext"]["runAsNonRoot"])

    def test_services_and_proxy(self):
        docs = self.docs()
        front = docs[("Service", "optd")]
        proxy = docs[("Deployment", "optd-shards")]
        self.assertEqual(front["spec"]["selector"], proxy["spec"]["selector"]["matchLabels"])
        conf = docs[("ConfigMap", "optd-shards")]["data"]["optd-shards.conf"]
        ours = read("nginx", "optd-shards.conf")
        # The in-cluster copy keeps the routing of deploy/nginx verbatim.
        for pattern in (r'"~\^/v1/sessions/.*" \$optd_name;', r"hash \$optd_session consistent;",
                        r"proxy_next_upstream off;"):
            a = re.search(pattern, conf)
            b = re.search(pattern, ours)
            self.assertTrue(a and b, pattern)
            self.assertEqual(a.group(0), b.group(0))
        sts = docs[("StatefulSet", "optd")]
        servers = re.findall(r"server (optd-\d+)\.%s:8080" % sts["spec"]["serviceName"], conf)
        self.assertEqual(servers, ["optd-%d" % i for i in range(sts["spec"]["replicas"])])

    def test_kustomization_lists_every_file(self):
        k = yaml.safe_load(read("k8s", "kustomization.yaml"))
        files = sorted(n for n in os.listdir(os.path.join(DEPLOY, "k8s"))
                       if n.endswith(".yaml") and n != "kustomization.yaml")
        self.assertEqual(sorted(k["resources"]), files)


@unittest.skipIf(yaml is None, "python3-yaml missing")
class Compose(unittest.TestCase):
    def test_compose(self):
        c = yaml.safe_load(read("compose.yaml"))
        svc = c["services"]["optd"]
        self.assertEqual(svc["build"]["dockerfile"], "deploy/Dockerfile")
        self.assertTrue(os.path.exists(os.path.join(DEPLOY, svc["build"]["context"],
                                                    svc["build"]["dockerfile"])))
        self.assertIn(svc["restart"], ("always", "unless-stopped", "on-failure"))
        self.assertIn("test", svc["healthcheck"])
        self.assertIn("/healthz", " ".join(svc["healthcheck"]["test"]))
        vol, _, path = svc["volumes"][0].partition(":")
        self.assertIn(vol, c["volumes"])
        self.assertEqual(path, svc["environment"]["OPTD_DATA_DIR"])


class Dockerfile(unittest.TestCase):
    def instructions(self):
        text = read("Dockerfile")
        text = re.sub(r"\\\n", " ", text)
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                kw, _, rest = line.partition(" ")
                out.append((kw.upper(), rest.strip()))
        return out

    def test_required_instructions(self):
        ins = self.instructions()
        froms = [r for k, r in ins if k == "FROM"]
        self.assertEqual(len(froms), 2, "multi-stage: a build and a runtime stage")
        for f in froms:
            self.assertRegex(f, r"^debian:(12|bookworm)")
        self.assertRegex(froms[0], r"(?i) AS build$")
        runtime = ins[[i for i, (k, _) in enumerate(ins) if k == "FROM"][1]:]
        kinds = {k for k, _ in runtime}
        for k in ("USER", "EXPOSE", "VOLUME", "HEALTHCHECK", "ENTRYPOINT", "ENV", "COPY"):
            self.assertIn(k, kinds, k)
        self.assertEqual([r for k, r in runtime if k == "EXPOSE"], ["8080"])
        user = [r for k, r in runtime if k == "USER"][0]
        self.assertNotIn(user.split(":")[0], ("root", "0"))
        self.assertIn("/healthz", [r for k, r in runtime if k == "HEALTHCHECK"][0])
        env = " ".join(r for k, r in runtime if k == "ENV")
        for var in ("OPTD_LISTEN", "OPTD_DATA_DIR"):
            self.assertIn(var, env)
        self.assertIn("/var/lib/optd", [r for k, r in runtime if k == "VOLUME"][0])
        # exec form: optd itself is PID 1 and gets SIGTERM (no shell between).
        self.assertTrue([r for k, r in runtime if k == "ENTRYPOINT"][0].startswith("["))
        # The runtime stage installs no compiler or -dev package.
        run = " ".join(r for k, r in runtime if k == "RUN")
        self.assertNotRegex(run, r"-dev\b|\bgcc\b|\bmake\b")
        build_run = " ".join(r for k, r in ins[:len(ins) - len(runtime)] if k == "RUN")
        self.assertIn("libmicrohttpd-dev", build_run)


@unittest.skipUnless(shutil.which("nginx"), "nginx missing (install-deps test)")
class NginxConfig(unittest.TestCase):
    def test_nginx_t(self):
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write("pid %s/nginx.pid; error_log %s/error.log;\nevents {}\n"
                        "http { access_log off; include %s; }\n"
                        % (d, d, os.path.join(DEPLOY, "nginx", "optd-shards.conf")))
            r = subprocess.run(["nginx", "-t", "-p", d, "-c", conf], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout.decode())


if __name__ == "__main__":
    unittest.main()


class MakeTargets(unittest.TestCase):
    """`make run` installs what building and running need, not the test
    tools; `make check` installs those too; a plain `make` installs the
    build packages (issue: a newcomer's make run installed nginx, clang...)."""

    def dry_run(self, target):
        out = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        return [l.split()[1:] for l in out.stdout.splitlines() if "install-deps.sh" in l]

    def test_run_installs_build_packages_only(self):
        self.assertEqual(self.dry_run("run"), [["build"]])

    def test_plain_make_installs_build_packages(self):
        self.assertEqual(self.dry_run("all"), [["build"]])

    def test_check_installs_test_packages(self):
        # Not `make -n check`: its recipe runs a make, which -n executes.
        with open(os.path.join(REPO, "Makefile")) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^check: deps$")
        self.assertRegex(text, r"(?m)^deps:\n\t@deploy/install-deps.sh build test$")

    def test_run_group_has_no_test_tools(self):
        text = read("install-deps.sh")
        build = re.search(r'^pkgs_build="([^"]*)"', text, re.M).group(1).split()
        for tool in ("nginx", "clang", "nodejs", "python3-sklearn", "python3-matplotlib", "systemd",
                     "check"):
            self.assertNotIn(tool, build)
