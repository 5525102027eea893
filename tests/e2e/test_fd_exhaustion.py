#!/usr/bin/python3
"""Descriptor exhaustion (issue 16, requirement 4): idle TCP connections take every
descriptor the daemon may open, gRPC's accept fails, and gRPC 1.51 then abandons its listener
for good. The daemon must not look ready while that lasts, and once the connections are gone
it must accept gRPC connections again by itself (server/listener_watch.h): /readyz back to
200 and a real turn served over a fresh connection.
"""

import socket
import time
import unittest

import grpc

import harness
from harness import sampling

NOFILE = 128  # soft = hard, so the daemon's raise-to-hard-limit cannot lift it


class LimitedDaemon(harness.Daemon):
    def command(self):
        return ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"] + super().command()


def ready(d):
    """True only for a 200 from /readyz; a refusal, a timeout or a 503 is 'not ready'."""
    try:
        status, _, _ = d.http("/readyz", timeout=2.0)
        return status == 200
    except OSError:
        return False


class FdExhaustionTest(unittest.TestCase):
    def test_listener_recovers_after_descriptors_run_out(self):
        d = LimitedDaemon(args=["--http-listen", "127.0.0.1:0"]).start()
        try:
            self.assertTrue(ready(d), d.log())
            host, port = d.address.rsplit(":", 1)
            socks = []
            try:
                for _ in range(3 * NOFILE):
                    s = socket.socket()
                    s.settimeout(1.0)
                    try:
                        s.connect((host, int(port)))
                    except OSError:
                        s.close()
                        break
                    socks.append(s)
                # The daemon accepted until it had no descriptor left: gRPC logs the failed
                # accept, and from then on the daemon is not ready.
                deadline = time.monotonic() + 20
                while "Failed accept4" not in d.log() and time.monotonic() < deadline:
                    time.sleep(0.1)
                self.assertIn("Failed accept4", d.log(), "the descriptors never ran out")
                # Readiness is re-evaluated at most once a second.
                deadline = time.monotonic() + 5
                while ready(d) and time.monotonic() < deadline:
                    time.sleep(0.2)
                self.assertFalse(ready(d), "ready while the gRPC listener cannot accept")
            finally:
                for s in socks:
                    s.close()
            deadline = time.monotonic() + 30
            while not ready(d) and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertTrue(ready(d), "readiness never came back\n" + d.log())
            self.assertIn("a new gRPC listener accepts", d.log())
            # A fresh connection (not one opened before the exhaustion) runs a real turn.
            with grpc.insecure_channel(d.address) as channel:
                c = harness.Client(channel)
                sid = c.create_session().session_id
                turn = c.turn(sid, tokens=[155, 60, 131], sampling=sampling(max_tokens=5))
                self.assertEqual(turn.ids, d.reference([155, 60, 131], 5))
                self.assertEqual(turn.finished.session_version, 1)
        finally:
            d.stop()


if __name__ == "__main__":
    harness.main()
