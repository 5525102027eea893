#!/usr/bin/python3
"""E2E (c): a cancelled or timed-out turn rolls back exactly.

A client cancel mid-stream (after the first delta of a very long turn) or a deadline that
expires mid-turn must leave the session at its previous version and token count, free the
session (no turn_running) and its slot, and the next turn must produce exactly what a fresh
session given the same history (without the cancelled turn) produces.
"""

import time

import grpc

import harness
from harness import sampling

LONG = 1_000_000  # tokens: a turn that cannot finish during the test
PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]
FOLLOW = [44, 45, 46, 47]
ABANDONED = [250, 251, 252, 253, 254, 255, 256]


class CancelTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        # Two slots and a batch of two: a leaked slot would show up as a hang in the next turn.
        cls.daemon = harness.Daemon(["--max-tokens-limit", str(LONG), "--slots", "2",
                                     "--max-batch", "2"], name="xlstmd(cancel)").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def committed_session(self):
        """A session with one committed turn: (session id, history ids)."""
        c = self.client
        s = c.create_session()
        t = c.turn(s.session_id, tokens=PROMPT, sampling=sampling(max_tokens=8))
        self.assertEqual(t.finished.session_version, 1)
        return s.session_id, PROMPT + t.ids

    def fresh_reference(self, follow):
        """What a fresh session produces for PROMPT (8 tokens) then `follow` (8 tokens)."""
        c = self.client
        s = c.create_session()
        c.turn(s.session_id, tokens=PROMPT, sampling=sampling(max_tokens=8))
        return c.turn(s.session_id, tokens=follow, sampling=sampling(max_tokens=8)).ids

    def check_rolled_back(self, sid, history, context):
        c = self.client
        s = harness.wait_turn_idle(c, sid)
        self.assertEqual(s.version, 1, f"{context}: version after the aborted turn")
        self.assertEqual(s.token_count, len(history),
                         f"{context}: token_count after the aborted turn")
        t = c.turn(sid, tokens=FOLLOW, sampling=sampling(max_tokens=8))
        self.assertEqual(t.started.base_version, 1, f"{context}: next turn's base_version")
        self.assertEqual(t.finished.session_version, 2, f"{context}: next turn's version")
        self.assertEqual(t.ids, self.fresh_reference(FOLLOW),
                         f"{context}: next turn vs a fresh session without the aborted turn")
        self.assertEqual(t.ids, self.daemon.reference(history + FOLLOW, 8),
                         f"{context}: next turn vs xlstm generate over the committed history")
        self.daemon.assert_serving(context)

    def test_cancel_mid_stream_rolls_back(self):
        sid, history = self.committed_session()
        call = self.client.chat_call(sid, tokens=ABANDONED, sampling=sampling(max_tokens=LONG),
                                     request_id=harness.rid("req-cancelled"))
        reader = harness.StreamReader(call, pause_after_first_delta=True)
        reader.wait_first_delta()
        self.assertEqual(reader.turn.started.base_version, 1)
        call.cancel()
        reader.join(30)
        self.assertIsNotNone(reader.error, "the call ended without an error after cancel")
        self.assertEqual(reader.error.code(), grpc.StatusCode.CANCELLED)
        self.assertIsNone(reader.turn.finished, "a cancelled turn must not report `finished`")
        self.check_rolled_back(sid, history, "client cancel")
        # The cancelled turn's request_id was never committed: it may be used again.
        t = self.client.turn(sid, tokens=[1], sampling=sampling(max_tokens=2),
                             request_id=harness.rid("req-cancelled"))
        self.assertEqual(t.finished.session_version, 3)

    def test_cancel_after_started_rolls_back(self):
        """Cancel as soon as `started` arrives (during prefill of a long input)."""
        sid, history = self.committed_session()
        long_input = [(k * 7 + 3) % 300 for k in range(3000)]
        call = self.client.chat_call(sid, tokens=long_input, sampling=sampling(max_tokens=LONG))
        reader = harness.StreamReader(call)
        if not reader.started.wait(30):
            self.fail("no `started` event within 30s")
        call.cancel()
        reader.join(30)
        self.assertIsNotNone(reader.error)
        self.assertEqual(reader.error.code(), grpc.StatusCode.CANCELLED)
        self.check_rolled_back(sid, history, "cancel after started")

    def test_deadline_mid_turn_rolls_back(self):
        sid, history = self.committed_session()
        call = self.client.chat_call(sid, tokens=ABANDONED, sampling=sampling(max_tokens=LONG),
                                     timeout=2.0)
        reader = harness.StreamReader(call)
        reader.join(30)
        self.assertIsNotNone(reader.error, "a 1,000,000-token turn finished within 2s?")
        self.assertEqual(reader.error.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                         harness.describe(reader.error))
        self.assertTrue(reader.turn.deltas, "the deadline was meant to expire mid-stream, but no "
                                            "delta arrived within 2s")
        self.check_rolled_back(sid, history, "deadline")

    def test_deadline_with_paused_reader_rolls_back(self):
        """A reader that stops reading: its turn pauses (bounded buffer); the deadline still
        ends it, with rollback."""
        sid, history = self.committed_session()
        call = self.client.chat_call(sid, tokens=ABANDONED, sampling=sampling(max_tokens=LONG),
                                     timeout=2.0)
        reader = harness.StreamReader(call, pause_after_first_delta=True)
        reader.wait_first_delta()
        time.sleep(2.5)  # past the deadline, still not reading
        reader.join(30)
        self.assertIsNotNone(reader.error)
        self.assertEqual(reader.error.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                         harness.describe(reader.error))
        self.check_rolled_back(sid, history, "deadline with a paused reader")

    def test_many_cancels_leak_no_slot(self):
        """Cancel 6 long turns in a row on 2 slots; then two turns still run at once."""
        c = self.client
        for k in range(6):
            s = c.create_session()
            call = c.chat_call(s.session_id, tokens=[k + 1], sampling=sampling(max_tokens=LONG))
            reader = harness.StreamReader(call, pause_after_first_delta=True)
            reader.wait_first_delta()
            call.cancel()
            reader.join(30)
            harness.wait_turn_idle(c, s.session_id)
        a, b = c.create_session(), c.create_session()
        ra = harness.StreamReader(c.chat_call(a.session_id, tokens=[3],
                                              sampling=sampling(max_tokens=LONG)))
        ra.wait_first_delta()
        rb = harness.StreamReader(c.chat_call(b.session_id, tokens=[4],
                                              sampling=sampling(max_tokens=LONG)))
        rb.wait_first_delta(timeout=15)
        time.sleep(0.2)
        self.assertIsNone(ra.error, "turn A ended while B started")
        self.assertIsNone(rb.error, "turn B failed")
        ra.call.cancel()
        rb.call.cancel()
        ra.join(30)
        rb.join(30)
        harness.wait_turn_idle(c, a.session_id)
        harness.wait_turn_idle(c, b.session_id)
        self.daemon.assert_serving("after repeated cancels")


if __name__ == "__main__":
    harness.main()
