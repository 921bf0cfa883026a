"""Command line: --help/--version exit 0; an unknown flag or a bad value
exits 2 with a one-line message on stderr and serves nothing; every flag of
API.md is accepted; --log-level controls the per-request log line, which
reaches the log file while the daemon runs and survives a SIGHUP reopen."""

import os
import signal
import subprocess
import time
import unittest

from harness import REPO, Daemon, free_port, optd_bin

API_FLAGS = ["--threads", "--data-dir", "--sync", "--snapshot-interval", "--auth-token-file",
             "--tls-cert", "--tls-key", "--max-body-bytes", "--max-sessions", "--max-params",
             "--history", "--max-connections", "--connection-timeout", "--metrics-auth",
             "--log-level", "--version", "--help", "--listen", "--ui", "--ui-assets"]


def run(*args, timeout=10):
    try:
        p = subprocess.run([optd_bin()] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("optd %s did not exit (it must not start serving)" % " ".join(args))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Cli(unittest.TestCase):
    def test_help(self):
        code, out, err = run("--help")
        self.assertEqual(code, 0, err)
        for flag in API_FLAGS:
            self.assertIn(flag, out, "--help does not mention %s" % flag)

    def test_version(self):
        code, out, err = run("--version")
        self.assertEqual(code, 0, err)
        version = open(os.path.join(REPO, "VERSION")).read().strip()
        self.assertIn(version, out)
        self.assertEqual(len(out.strip().splitlines()), 1, out)

    def test_unknown_flags_and_bad_values_exit_2(self):
        port = "127.0.0.1:%d" % free_port()
        cases = [["--bogus"], ["-z"], ["--listen"], ["--listen", "nonsense"], ["--listen", "127.0.0.1:99999"],
                 ["--threads", "abc"], ["--threads", "0"], ["--threads", "-2"], ["--threads", "4x"],
                 ["--sync", "sometimes"], ["--snapshot-interval", "-1"], ["--snapshot-interval", "x"],
                 ["--max-body-bytes", "-1"], ["--max-body-bytes", "lots"], ["--max-body-bytes", "0"],
                 ["--max-sessions", "x"], ["--max-sessions", "-5"], ["--max-params", "x"],
                 ["--history", "x"], ["--history", "-1"], ["--max-connections", "0"],
                 ["--max-connections", "x"], ["--connection-timeout", "x"],
                 ["--connection-timeout", "-3"], ["--log-level", "loud"], ["--threads", ""],
                 ["--max-sessions", "99999999999999999999999"], ["stray-argument"]]
        for args in cases:
            with self.subTest(args=args):
                full = (["--listen", port] if "--listen" not in args else []) + args
                code, out, err = run(*full)
                self.assertEqual(code, 2, "exit %s for %r; stderr %r" % (code, args, err))
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, "stderr for %r is not one line: %r" % (args, err))

    def test_every_flag_accepted(self):
        d = Daemon(flags=["--threads", "2", "--sync", "always", "--snapshot-interval", "2",
                          "--max-body-bytes", "100000", "--max-sessions", "10", "--max-params", "1000",
                          "--history", "3", "--max-connections", "16", "--connection-timeout", "5",
                          "--log-level", "debug", "--metrics-auth"],
                   data_dir=True, token="t")
        d.start()
        try:
            d.create("cli-a", "sgd", size=2)
            self.assertEqual(d.get("/v1/sessions/cli-a").status, 200)
            d.stop()
        finally:
            d.kill9()
            d.cleanup()


class Listen(unittest.TestCase):
    def test_a_second_daemon_on_the_same_port_is_refused(self):
        # With SO_REUSEPORT (MHD_OPTION_LISTENING_ADDRESS_REUSE) a second
        # optd bound the same port and the kernel split new connections
        # between the two: sessions seemed to come and go.
        a = Daemon()
        a.start()
        try:
            a.create("mine", size=2)
            b = subprocess.Popen([optd_bin(), "--listen", "127.0.0.1:%d" % a.port],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = b.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                b.kill()
                b.communicate()
                self.fail("a second optd started on port %d of a running one" % a.port)
            self.assertNotEqual(b.returncode, 0)
            self.assertIn("already in use", err.decode(), err.decode())
            for _ in range(20):  # new connections all reach the first daemon
                a.close_connections()
                self.assertEqual(a.get("/v1/sessions/mine").status, 200)
            a.stop()
        finally:
            a.kill9()
            a.cleanup()


class Logging(unittest.TestCase):
    def logs(self, d):
        text = d.stderr_text(all_runs=True)
        try:
            text += open(d.stdout_path, encoding="utf-8", errors="replace").read()
        except OSError:
            pass
        return text

    def test_info_logs_one_line_per_request(self):
        d = Daemon(flags=["--log-level", "info"])
        d.start()
        try:
            d.get("/v1/optimizers")
            d.get("/v1/sessions/no-such-session-xyz")
            d.stop()
            text = self.logs(d)
            lines = [l for l in text.splitlines() if "/v1/optimizers" in l]
            self.assertEqual(len(lines), 1, text[-3000:])
            self.assertIn("GET", lines[0])
            self.assertIn("200", lines[0])
            lines = [l for l in text.splitlines() if "no-such-session-xyz" in l]
            self.assertTrue(lines and "404" in lines[0], text[-3000:])
        finally:
            d.kill9()
            d.cleanup()

    def wait_for_line(self, path, needle, seconds=5.0):
        """The text of path once a line holding needle is in it (request
        lines are buffered for at most a fraction of a second)."""
        deadline = time.monotonic() + seconds
        text = ""
        while time.monotonic() < deadline:
            try:
                text = open(path, encoding="utf-8", errors="replace").read()
            except OSError:
                text = ""
            if needle in text:
                return text
            time.sleep(0.05)
        self.fail("no line with %r in %s within %gs:\n%s" % (needle, path, seconds, text[-3000:]))

    def start_logging_to_file(self):
        """A started daemon with --log-file, and the file's path."""
        d = Daemon()
        log = os.path.join(d.tmp, "optd.log")
        d.flags += ["--log-file", log]
        d.start()
        return d, log

    def test_request_lines_reach_the_log_while_running(self):
        # Buffered request lines must be written without waiting for more
        # traffic or for the stop, whole and in the order the requests were
        # answered.  (Not necessarily after "listening on": MHD serves from
        # the moment it starts, and on a loaded machine the main thread has
        # written that line after the first requests were answered.)
        d, log = self.start_logging_to_file()
        try:
            for i in range(5):
                d.get("/v1/sessions/wait-%d" % i)
            text = self.wait_for_line(log, "/v1/sessions/wait-4")
            d.assert_alive()
            order = [text.index("/v1/sessions/wait-%d" % i) for i in range(5)]
            self.assertEqual(order, sorted(order), text[-3000:])
            for line in text.splitlines():  # whole lines, never two run together
                self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) ")
            d.stop()
        finally:
            d.kill9()
            d.cleanup()

    def test_sighup_reopens_the_log_file_and_loses_no_line(self):
        # logrotate's way: rename the file, SIGHUP, the daemon writes to a
        # new file of the old name; lines buffered before the signal belong
        # to the old file and are all there.
        d, log = self.start_logging_to_file()
        try:
            for i in range(50):
                d.get("/v1/sessions/before-%d" % i)
            # The last line is logged just after its answer is sent: wait
            # until it is in the file, or it could land after the reopen.
            self.wait_for_line(log, "/v1/sessions/before-49 ")
            os.rename(log, log + ".1")
            d.send_signal(signal.SIGHUP)
            new = self.wait_for_line(log, "reopened")
            d.get("/v1/sessions/after-hup")
            d.stop()
            old = open(log + ".1", encoding="utf-8").read()
            new = open(log, encoding="utf-8").read()
            for i in range(50):
                self.assertEqual(old.count("/v1/sessions/before-%d " % i), 1, old[-3000:])
                self.assertNotIn("/v1/sessions/before-%d " % i, new)
            self.assertIn("/v1/sessions/after-hup", new)
            self.assertNotIn("/v1/sessions/after-hup", old)
            self.assertRegex(new, r"(?m) info  stopped$")
        finally:
            d.kill9()
            d.cleanup()

    def test_error_level_has_no_request_lines(self):
        d = Daemon(flags=["--log-level", "error"])
        d.start()
        try:
            d.get("/v1/optimizers")
            d.stop()
            self.assertNotIn("/v1/optimizers", self.logs(d))
        finally:
            d.kill9()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
