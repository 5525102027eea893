#!/usr/bin/python3
"""Scrape cost vs session count (issue 6): starts build/bin/xlstmd on the bundled model with
--http-listen, times /metrics (median of 50) at 10 and at 10,000 sessions, prints one JSON
line. A scrape reads O(1) engine counters, so the two should be about equal.
Usage: scripts/bench-scrape.py   (after scripts/bootstrap.sh)"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import grpc  # noqa: E402
import harness  # noqa: E402


def main():
    daemon = subprocess.Popen(
        [os.path.join(REPO, "build", "bin", "xlstmd"), "--listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--max-sessions", "20000"],
        stderr=subprocess.PIPE, text=True, cwd=REPO)
    addr = http = None
    for line in daemon.stderr:
        m, h = re.search(r" listen=(\S+)", line), re.search(r"http=(\S+)", line)
        if m and h:
            addr, http = m.group(1), h.group(1)
            break
    if addr is None:
        raise SystemExit("xlstmd did not start")
    client = harness.Client(grpc.insecure_channel(addr))

    def scrape_ms(n=50):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            urllib.request.urlopen(f"http://{http}/metrics").read()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    result, count = {}, 0
    try:
        for target in (10, 10000):
            while count < target:
                client.create_session()
                count += 1
            result[f"scrape_median_ms_{target}_sessions"] = round(scrape_ms(), 3)
    finally:
        daemon.terminate()
        daemon.wait(30)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
