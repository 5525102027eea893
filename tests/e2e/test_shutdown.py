#!/usr/bin/python3
"""E2E (e): SIGTERM while streaming.

With a long enough --grace-period a running turn finishes and commits, health answers
NOT_SERVING and new work is UNAVAILABLE during the drain, and the daemon exits 0. With a short
grace period a long turn is cancelled with UNAVAILABLE and the process exits 0 within grace
plus a few seconds. An idle daemon exits 0 promptly on SIGTERM and on SIGINT. With
--drain-delay everything is still served for the delay while the probes say not ready.
"""

import signal
import time

import grpc

import harness
import web_client as web
from harness import sampling

Code = grpc.StatusCode
LONG = 1_000_000
DRAIN_TURN = 20000  # tokens: more than gRPC buffers for a paused reader; done within grace


class ShutdownTest(harness.E2ETestCase):

    def test_sigterm_drains_running_turn(self):
        d = self.start_daemon(["--grace-period", "60s", "--max-tokens-limit", str(LONG),
                               "--stream-buffer", "4"], name="xlstmd(drain)")
        c = d.client()
        s = c.create_session()
        other = c.create_session()
        reference = d.reference([155, 60, 131, 158, 254, 209, 277, 242, 13], 16)
        prompt = [155, 60, 131, 158, 254, 209, 277, 242, 13]
        # The reader stops after the first delta until the drain checks are done, so the turn
        # (a slow reader pauses only its own turn) is still in flight during them.
        reader = harness.StreamReader(
            c.chat_call(s.session_id, tokens=prompt, sampling=sampling(max_tokens=DRAIN_TURN),
                        timeout=120),
            pause_after_first_delta=True)
        reader.wait_first_delta()
        t_term = time.monotonic()
        d.send_signal(signal.SIGTERM)
        try:
            # Draining: health NOT_SERVING, new turns and sessions UNAVAILABLE.
            d.wait_health(harness.HEALTH_NOT_SERVING, timeout=5)
            self.assertTrue(d.alive(), "the daemon exited with a turn in flight")
            self.assertRpcError(
                lambda: harness.collect(c.chat_call(other.session_id, tokens=[1],
                                                    sampling=sampling(max_tokens=2))),
                Code.UNAVAILABLE, None, "a new turn while draining")
            self.assertRpcError(lambda: c.create_session(), Code.UNAVAILABLE, None,
                                "CreateSession while draining")
            self.assertTrue(d.alive(), "the daemon exited with a turn in flight")
        finally:
            reader.join(90)
        self.assertIsNone(reader.error, "the running turn must finish within the grace period: "
                          + (harness.describe(reader.error) if reader.error else ""))
        t = reader.turn
        self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_MAX_TOKENS)
        self.assertEqual(len(t.ids), DRAIN_TURN)
        self.assertEqual(t.finished.session_version, 1, "the drained turn commits")
        self.assertEqual(t.ids[:16], reference, "the drained turn's tokens")
        # The server's own turn time shows it was still generating when SIGTERM came.
        self.assertGreater(t.start_time + t.finished.usage.total_ms / 1000.0, t_term,
                           "test design: the turn had already finished generating at SIGTERM")
        rc = d.wait_exit(30)
        self.assertIsNotNone(rc, "the daemon did not exit after its last turn finished")
        self.assertEqual(rc, 0, "exit code after a graceful drain")
        print(f"drain: SIGTERM -> exit {time.monotonic() - t_term:.2f}s")

    def test_sigterm_short_grace_cancels_turn(self):
        grace = 1
        d = self.start_daemon(["--grace-period", f"{grace}s", "--max-tokens-limit", str(LONG)],
                              name="xlstmd(short-grace)")
        c = d.client()
        s = c.create_session()
        reader = harness.StreamReader(c.chat_call(s.session_id, tokens=[1, 2, 3],
                                                  sampling=sampling(max_tokens=LONG),
                                                  timeout=120))
        reader.wait_first_delta()
        t_term = time.monotonic()
        d.send_signal(signal.SIGTERM)
        reader.join(grace + 10)
        ended = time.monotonic() - t_term
        self.assertIsNone(reader.turn.finished, "a 1,000,000-token turn finished?")
        self.assertIsNotNone(reader.error)
        self.assertEqual(reader.error.code(), Code.UNAVAILABLE,
                         f"a turn cut by shutdown: {harness.describe(reader.error)}")
        self.assertGreater(ended, grace * 0.8, f"the turn was cut after {ended:.2f}s, before "
                                               f"the {grace}s grace period")
        rc = d.wait_exit(grace + 5 - (time.monotonic() - t_term))
        self.assertIsNotNone(rc, f"not exited within grace ({grace}s) + 5s of SIGTERM")
        self.assertEqual(rc, 0)
        print(f"short grace: turn cut after {ended:.2f}s, exit after "
              f"{time.monotonic() - t_term:.2f}s")

    def test_sigterm_drains_queued_turn(self):
        """A turn still waiting for a batch place at SIGTERM also runs and commits."""
        # A must still be running at SIGTERM on any machine: its reader pauses after the first
        # delta and A is longer than gRPC and a 4-event stream buffer hold, so A waits for the
        # reader (a fast CPU generated 5,000 tokens before the SIGTERM was sent).
        d = self.start_daemon(["--grace-period", "60s", "--max-batch", "1", "--max-tokens-limit",
                               str(LONG), "--stream-buffer", "4"], name="xlstmd(drain-queued)")
        c = d.client()
        a, b = c.create_session().session_id, c.create_session().session_id
        want_b = d.reference([3, 4], 8)
        n = DRAIN_TURN
        ra = harness.StreamReader(c.chat_call(a, tokens=[1, 2], sampling=sampling(max_tokens=n),
                                              timeout=120), pause_after_first_delta=True)
        ra.wait_first_delta()
        rb = harness.StreamReader(c.chat_call(b, tokens=[3, 4], sampling=sampling(max_tokens=8),
                                              timeout=120))
        deadline = time.monotonic() + 10
        while not c.get_session(b).turn_running:
            self.assertLess(time.monotonic(), deadline, "turn B never registered")
            time.sleep(0.02)
        self.assertFalse(rb.turn.deltas, "max-batch 1, yet B runs next to A")
        d.send_signal(signal.SIGTERM)
        d.wait_health(harness.HEALTH_NOT_SERVING, timeout=5)
        ra.join(60)
        rb.join(60)
        for name, r in (("A (running)", ra), ("B (queued)", rb)):
            self.assertIsNone(r.error, f"turn {name} during drain: "
                              + (harness.describe(r.error) if r.error else ""))
            self.assertEqual(r.turn.finished.session_version, 1, f"turn {name} commits")
        self.assertEqual(len(ra.turn.ids), n)
        self.assertEqual(rb.turn.ids, want_b)
        rc = d.wait_exit(30)
        self.assertEqual(rc, 0, "exit after draining a queued turn")

    def test_second_sigterm_skips_the_wait(self):
        """A second SIGTERM skips the grace period (the daemon logs so): the running turn is
        rolled back with UNAVAILABLE and the daemon exits 0 promptly."""
        d = self.start_daemon(["--grace-period", "60s", "--max-tokens-limit", str(LONG)],
                              name="xlstmd(double-term)")
        c = d.client()
        s = c.create_session()
        reader = harness.StreamReader(c.chat_call(s.session_id, tokens=[1],
                                                  sampling=sampling(max_tokens=LONG),
                                                  timeout=120))
        reader.wait_first_delta()
        d.send_signal(signal.SIGTERM)
        d.wait_health(harness.HEALTH_NOT_SERVING, timeout=5)
        time.sleep(0.3)
        self.assertFalse(reader.done.is_set(), "the turn ended on the first SIGTERM despite "
                                               "a 60s grace period")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        reader.join(15)
        self.assertIsNotNone(reader.error)
        self.assertEqual(reader.error.code(), Code.UNAVAILABLE, harness.describe(reader.error))
        rc = d.wait_exit(10)
        self.assertIsNotNone(rc, "no exit within 10s of the second SIGTERM")
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 10)

    def test_idle_sigterm_and_sigint_exit_zero(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            d = self.start_daemon([], name=f"xlstmd(idle-{sig.name})")
            c = d.client()
            s = c.create_session()
            c.turn(s.session_id, tokens=[1, 2], sampling=sampling(max_tokens=3))
            t0 = time.monotonic()
            d.send_signal(sig)
            rc = d.wait_exit(10)
            self.assertIsNotNone(rc, f"an idle daemon did not exit within 10s of {sig.name}")
            self.assertEqual(rc, 0, f"exit code after {sig.name}")
            self.assertLess(time.monotonic() - t0, 10)


    def test_drain_delay_keeps_serving_while_probes_say_not_ready(self):
        """--drain-delay: after SIGTERM, /readyz is 503 and health NOT_SERVING at once, yet
        turns and new sessions still succeed until the delay is over; then UNAVAILABLE."""
        d = self.start_daemon(["--drain-delay", "3s", "--http-listen", "127.0.0.1:0",
                               "--web-listen", "127.0.0.1:0"], name="xlstmd(drain-delay)")
        c = d.client()
        s = c.create_session()
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        d.wait_health(harness.HEALTH_NOT_SERVING, timeout=2)
        self.assertEqual(d.http("/readyz")[0], 503)
        t = c.turn(s.session_id, tokens=[1, 2], sampling=sampling(max_tokens=3))
        self.assertEqual(t.finished.session_version, 1)
        c.create_session()
        # The web listener serves too (it is a load balancer's backend like the gRPC port).
        r = web.request(d.web_address, "POST", "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        self.assertEqual(r.status, 200, r)
        self.assertLess(time.monotonic() - t0, 2.5, "the checks above ran past the delay")
        deadline = time.monotonic() + 10
        while True:
            try:
                c.create_session(timeout=2)
            except grpc.RpcError as e:
                # UNAVAILABLE from the draining engine, or CANCELLED/UNAVAILABLE from the
                # transport when the idle daemon is already shutting it down.
                self.assertIn(e.code(), (Code.UNAVAILABLE, Code.CANCELLED), e.details())
                break
            self.assertLess(time.monotonic(), deadline, "still admitting 10 s after SIGTERM")
            time.sleep(0.1)
        self.assertGreaterEqual(time.monotonic() - t0, 2.9, "refused before --drain-delay")
        self.assertEqual(d.wait_exit(20), 0)

    def test_open_file_soft_limit_is_raised_to_the_hard_limit(self):
        """Connections and snapshot writes need descriptors: started under a low soft limit,
        the daemon raises it to the hard limit and says so."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        low = min(256, hard)
        if low >= hard:
            self.skipTest(f"the hard open-file limit ({hard}) leaves nothing to raise")
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        try:
            d = self.start_daemon([], name="xlstmd(rlimit)")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with open(f"/proc/{d.proc.pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        got_soft, got_hard = line.split()[3:5]
        self.assertEqual(got_soft, got_hard, line)
        self.assertIn(f"open-file limit raised from {low}", d.log())
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(10), 0)


if __name__ == "__main__":
    harness.main()
