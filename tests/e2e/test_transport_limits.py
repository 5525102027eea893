#!/usr/bin/python3
"""gRPC transport limits, by their effect on a real client (issue 16, requirement 3):
--max-streams-per-connection holds a connection's extra calls back (HTTP/2
MAX_CONCURRENT_STREAMS) without touching other connections; keepalive enforcement answers
a client that pings an idle connection too often with a GOAWAY (too_many_pings) while polite
clients keep theirs; and past --grpc-memory-mb, gRPC refuses calls instead of the process
growing, then serves again.
"""

import collections

import threading
import time

import grpc

import harness
from harness import sampling

LONG = 1_000_000


class TransportLimitsTest(harness.E2ETestCase):

    def test_streams_per_connection_hold_back_only_that_connection(self):
        d = self.start_daemon(["--max-streams-per-connection", "2", "--max-tokens-limit", str(LONG),
                               "--max-batch", "8"], name="xlstmd(streams)")
        shared = d.client()
        sessions = [shared.create_session().session_id for _ in range(4)]
        readers = [harness.StreamReader(shared.chat_call(s, tokens=[1], sampling=sampling(
            max_tokens=LONG))) for s in sessions[:3]]
        for r in readers[:2]:
            self.assertTrue(r.started.wait(10), "a call within the cap did not start")
        # The third call on the same connection waits for a stream...
        self.assertFalse(readers[2].started.wait(1.0),
                         "a third stream ran on a connection capped at two")
        # ...while another connection is not held back.
        other = d.client(channel=d.channel())
        elsewhere = harness.StreamReader(other.chat_call(sessions[3], tokens=[1],
                                                         sampling=sampling(max_tokens=LONG)))
        self.assertTrue(elsewhere.started.wait(10), "another connection was held back")
        # One of the first two ends: the waiting call starts.
        readers[0].call.cancel()
        self.assertTrue(readers[2].started.wait(10), "the held-back call never started")
        for r in readers[1:] + [elsewhere]:
            r.call.cancel()
        for r in readers + [elsewhere]:
            r.done.wait(10)
        d.assert_serving("after the capped streams")

    def test_keepalive_abuse_gets_a_goaway(self):
        d = self.start_daemon([], name="xlstmd(keepalive)")

        def watch(options):
            ch = grpc.insecure_channel(d.address, options=[("grpc.use_local_subchannel_pool", 1),
                                                           *options])
            states = []
            lock = threading.Lock()

            def record(state):
                with lock:
                    states.append(state)
            ch.subscribe(record, try_to_connect=True)
            return ch, states, lock

        abusive, abusive_states, _ = watch([
            ("grpc.keepalive_time_ms", 100), ("grpc.keepalive_timeout_ms", 1000),
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)])
        polite, polite_states, _ = watch([])
        self.addCleanup(abusive.close)
        self.addCleanup(polite.close)
        ready = grpc.ChannelConnectivity.READY
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left_ready = abusive_states.count(ready) and abusive_states[-1] != ready
            if left_ready:
                break
            time.sleep(0.1)
        self.assertIn(ready, abusive_states, "the abusive channel never connected")
        self.assertNotEqual(abusive_states[-1], ready,
                            f"an idle connection pinged every 100 ms was never closed: "
                            f"{abusive_states}")
        self.assertEqual(polite_states[-1], ready, f"a polite connection was closed: "
                                                   f"{polite_states}")
        d.assert_serving("after the keepalive abuse")

    def burst(self, d, threads=24, calls=3):
        """Concurrent ~4 MB requests (each refused by the engine as too long, if it gets them);
        counts the outcomes."""
        codes = collections.Counter()
        lock = threading.Lock()

        def worker():
            c = d.client(channel=d.channel())
            for _ in range(calls):
                try:
                    c.create_session(system_prompt="x" * 3_900_000, timeout=30)
                    outcome = "OK"
                except grpc.RpcError as e:
                    reached_engine = "over the limit" in (e.details() or "")
                    outcome = "engine" if reached_engine else e.code().name
                with lock:
                    codes[outcome] += 1
        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in ts), "a call hung")
        return codes

    def test_past_the_memory_quota_calls_are_refused_not_buffered(self):
        args = ["--max-message-bytes", "4000000"]
        roomy = self.start_daemon(args, name="xlstmd(quota 1024)")
        codes = self.burst(roomy)
        self.assertEqual(codes, {"engine": 72}, "with room, every request reaches the engine")
        tight = self.start_daemon(args + ["--grpc-memory-mb", "16"], name="xlstmd(quota 16)")
        codes = self.burst(tight)
        refused = codes["RESOURCE_EXHAUSTED"] + codes["UNAVAILABLE"]
        self.assertGreater(refused, 0, f"nothing was refused at a 16 MiB quota: {codes}")
        self.assertEqual(sum(codes.values()), 72)
        self.assertEqual(set(codes) - {"engine", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, set(),
                         codes)
        tight.assert_serving("after the quota refused calls")
        c = tight.client()
        s = c.create_session()
        self.assertEqual(len(c.turn(s.session_id, tokens=[1, 2], sampling=sampling(
            max_tokens=3)).ids), 3)


if __name__ == "__main__":
    harness.main()
