#!/usr/bin/python3
"""E2E (issue 5, rewind): --keep-turn-checkpoints K and RewindSession. Regenerating the last
reply after a rewind gives exactly what the original turn gave; an edited turn after a rewind
equals a replay of the history up to that version plus the new input; versions that are not
kept, unknown sessions and rewinds without checkpoints fail with clear codes; under sync
durability a rewound session survives a SIGKILL at its rewound version.
"""

import signal
import tempfile

import grpc

import harness
from harness import sampling

Code = grpc.StatusCode


class RewindTest(harness.E2ETestCase):

    def test_regenerate_and_edit(self):
        d = harness.Daemon(["--keep-turn-checkpoints", "2"], name="xlstmd(rewind)").start()
        try:
            c = d.client()
            s = c.create_session().session_id
            inputs = [[100, 101, 102], [7, 8], [9, 10, 11]]
            history, turns, infos = [], [], []
            for k, inp in enumerate(inputs):
                t = c.turn(s, tokens=inp, sampling=sampling(max_tokens=6), request_id=harness.rid(f"r{k}"))
                turns.append(t)
                history.append(inp + t.ids)
                infos.append(c.get_session(s))
            self.assertEqual(infos[-1].version, 3)

            # Regenerate the last reply: back to version 2, same input, same greedy reply.
            r = c.rewind_session(s, 2)
            self.assertEqual((r.version, r.token_count), (2, infos[1].token_count),
                             "the rewound session reports version 2's metadata")
            again = c.turn(s, tokens=inputs[2], sampling=sampling(max_tokens=6),
                           request_id=harness.rid("r2"))  # undone by the rewind, so it may run again
            self.assertEqual(again.ids, turns[2].ids, "regenerated reply == the original")
            self.assertEqual(again.finished.session_version, 3)

            # Edit the second message: back to version 1, a different input; the reply equals
            # xlstm generate over the history up to version 1 plus the new input.
            r = c.rewind_session(s, 1)
            self.assertEqual(r.version, 1)
            edited = c.turn(s, tokens=[55, 56], sampling=sampling(max_tokens=6))
            self.assertEqual(edited.ids, d.reference(history[0] + [55, 56], 6),
                             "a turn after a rewind == replay of the kept history + new input")

            # A fork at a kept version branches off without touching the session.
            f = c.fork_session(s, version=1)
            self.assertEqual((f.version, f.token_count), (1, infos[0].token_count))
            branch = c.turn(f.session_id, tokens=[55, 56], sampling=sampling(max_tokens=6))
            self.assertEqual(branch.ids, edited.ids, "a fork at v1 continues like a rewind to v1")
            self.assertEqual(c.get_session(s).version, 2)
            self.assertRpcError(lambda: c.fork_session(s, version=7), Code.FAILED_PRECONDITION,
                                "not kept", "fork at a version that never existed")

            # Only the last K=2 earlier versions are kept; 7 never existed.
            e = self.assertRpcError(lambda: c.rewind_session(s, 7), Code.FAILED_PRECONDITION,
                                    "not kept", "rewind to a version that never existed")
            self.assertIn("kept", e.details())
            self.assertRpcError(lambda: c.rewind_session("A" * 22, 0), Code.NOT_FOUND, None,
                                "rewind of an unknown session")
            self.assertRpcError(lambda: c.rewind_session("bad id!", 0), Code.INVALID_ARGUMENT,
                                None, "rewind with a malformed session id")
            # Rewinding to the current version is a no-op.
            self.assertEqual(c.rewind_session(s, 2).version, 2)
            d.assert_serving("after the rewinds")
        finally:
            d.stop()

    def test_rewind_off_by_default(self):
        d = harness.Daemon([], name="xlstmd(no rewind)").start()
        try:
            c = d.client()
            s = c.create_session().session_id
            c.turn(s, tokens=[1, 2, 3], sampling=sampling(max_tokens=3))
            self.assertRpcError(lambda: c.rewind_session(s, 0), Code.FAILED_PRECONDITION,
                                "not kept", "rewind without --keep-turn-checkpoints")
        finally:
            d.stop()

    def test_rewind_is_durable_under_sync(self):
        with tempfile.TemporaryDirectory() as sd:
            args = ["--keep-turn-checkpoints", "3", "--state-dir", sd, "--durability", "sync"]
            d = harness.Daemon(args, name="xlstmd(rewind, sync)").start()
            c = d.client()
            s = c.create_session().session_id
            first = c.turn(s, tokens=[20, 21, 22], sampling=sampling(max_tokens=5))
            c.turn(s, tokens=[30], sampling=sampling(max_tokens=5))
            c.rewind_session(s, 1)
            d.send_signal(signal.SIGKILL)
            d.wait_exit(20)
            d2 = harness.Daemon(args, name="xlstmd(rewind, sync, restarted)").start()
            try:
                c2 = d2.client()
                self.assertEqual(c2.get_session(s).version, 1, "the rewind survived the kill")
                t = c2.turn(s, tokens=[40, 41], sampling=sampling(max_tokens=5))
                self.assertEqual(t.ids, d2.reference([20, 21, 22] + first.ids + [40, 41], 5),
                                 "the restored state is version 1's")
            finally:
                d2.stop()


if __name__ == "__main__":
    harness.main()
