#!/usr/bin/python3
"""Integration: a real Prometheus server scrapes the real daemon.

Starts xlstmd with --http-listen 127.0.0.1:0, runs one turn, then runs `prometheus` (the
Debian package) on a free loopback port with a generated config whose only target is the
daemon's http address (scrape_interval 1s, storage in a temp dir), waits until it has scraped,
and reads our series back through its HTTP API. A missing prometheus binary is a failure.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import harness
from harness import sampling


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusTest(harness.E2ETestCase):

    def test_prometheus_scrapes_the_daemon(self):
        prometheus = shutil.which("prometheus")
        self.assertIsNotNone(prometheus, "prometheus not found (Debian package prometheus); "
                                         "run scripts/bootstrap.sh")
        d = self.start_daemon(["--http-listen", "127.0.0.1:0"], name="xlstmd(scraped)")
        c = d.client()
        s = c.create_session()
        t = c.turn(s.session_id, tokens=[155, 60, 131], sampling=sampling(max_tokens=6))
        self.assertEqual(len(t.ids), 6)

        tmp = tempfile.mkdtemp(prefix="xlstmd-prom-")
        self.addCleanup(shutil.rmtree, tmp, True)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: xlstmd\n"
                    "    static_configs:\n"
                    f"      - targets: ['{d.http_address}']\n")
        port = free_port()
        log_path = os.path.join(tmp, "prometheus.log")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.addCleanup(self._stop, proc)

        def query(q):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
            self.assertEqual(body["status"], "success", body)
            return body["data"]["result"]

        def prom_log():
            with open(log_path) as f:
                return f.read()[-4000:]

        # Wait for a scrape that saw the turn (the first scrape comes within ~1 s of start).
        deadline = time.monotonic() + 30
        result = []
        while True:
            self.assertIsNone(proc.poll(), f"prometheus exited: {prom_log()}")
            try:
                result = query("xlstmd_generated_tokens_total")
            except OSError:
                result = []  # not listening yet
            if result:
                break
            self.assertLess(time.monotonic(), deadline,
                            f"prometheus has not scraped the daemon within 30 s\n{prom_log()}")
            time.sleep(0.2)

        self.assertEqual(len(result), 1, result)
        self.assertEqual(result[0]["metric"]["job"], "xlstmd")
        self.assertEqual(result[0]["metric"]["instance"], d.http_address)
        self.assertEqual(float(result[0]["value"][1]), 6)
        up = query('up{job="xlstmd"}')
        self.assertEqual([float(r["value"][1]) for r in up], [1.0], "the scrape must succeed")
        turns = query('xlstmd_turns_total{finish_reason="max_tokens"}')
        self.assertEqual([float(r["value"][1]) for r in turns], [1.0])
        # A histogram's buckets arrive as series Prometheus can aggregate.
        buckets = query("sum by (le) (xlstmd_time_to_first_token_seconds_bucket)")
        self.assertIn("+Inf", {r["metric"]["le"] for r in buckets})

    @staticmethod
    def _stop(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    harness.main()
