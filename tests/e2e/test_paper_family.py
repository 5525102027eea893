#!/usr/bin/python3
"""E2E: a family-B model (the xLSTM paper's xLSTMLMModel: mLSTM blocks with causal conv and
sLSTM blocks) served by xlstmd exactly like xLSTM-7B (issue 12, requirement 5).

The daemon serves ../shared/golden/xlstm-paper-b1. Every greedy turn is compared with
`xlstm generate` over the session's whole history (a one-shot replay from a zero state), so
resuming a session from its stored state (conv windows and sLSTM states included) must give
the same ids as reading the history again: over several turns, for 8 sessions at once, after a
restart on the same --state-dir, after export and import into another daemon, after a rewind
and from a fork, and moved between two daemons through Redis. A
snapshot of a family-A model is refused by the family-B daemon (and the other way round)
with FAILED_PRECONDITION naming both layouts.
"""

import shutil
import tempfile
import threading

import grpc

import harness
from harness import Conversation, sampling
from test_redis import RedisServer

Code = grpc.StatusCode
MODEL = "xlstm-paper-b1"
PROMPT = [206, 208, 275, 163, 115, 289, 211, 80, 62]


def prompt(i):
    return [(p + 7 * i) % 300 for p in PROMPT]


class PaperFamilyTest(harness.E2ETestCase):

    def start(self, extra=(), name="xlstmd(paper)"):
        return self.start_daemon(list(extra), model=MODEL, name=name)

    def test_model_info_names_the_family(self):
        d = self.start()
        info = d.client().model_info()
        self.assertEqual(info.family, "xlstm-paper")
        self.assertEqual((info.vocab_size, info.embedding_dim, info.num_blocks), (300, 64, 4))
        # 2 mLSTM blocks (C 4x32x32, n, m, conv window 3x128) + 2 sLSTM blocks (h, c, n, m
        # of 64, conv window 3x64), each section 64-byte aligned.
        self.assertEqual(info.state_bytes_per_session, 4 * (2 * (4096 + 128 + 16 + 384)
                                                           + 2 * (4 * 64 + 192)))

    def test_multi_turn_resume_equals_one_shot_replay(self):
        d = self.start()
        c = d.client()
        conv = Conversation(d, c.create_session().session_id)
        for i, n in enumerate((5, 1, 12, 3)):
            # Turns shorter than the conv window (1 token) and longer than a prefill chunk.
            tokens = prompt(i)[:n] if n < len(PROMPT) else (prompt(i) * 2)[:n]
            conv.turn(c, tokens, max_tokens=6, context=f"turn {i}")
        conv.check_session(c, "after four turns")

    def test_eight_concurrent_sessions(self):
        d = self.start(["--max-batch", "8"])
        c = d.client()
        convs = [Conversation(d, c.create_session().session_id) for _ in range(8)]
        errors = []

        def run(i):
            try:
                for t in range(3):
                    convs[i].turn(c, prompt(i + t)[: 3 + (i + t) % 6], max_tokens=5,
                                  context=f"session {i} turn {t}")
            except Exception as e:  # reported below with the session
                errors.append(f"session {i}: {e}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for conv in convs:
            conv.check_session(c, "after the concurrent turns")

    def test_restart_on_state_dir_resumes_exactly(self):
        state = tempfile.mkdtemp(prefix="xlstmd-e2e-paper-state-")
        self.addCleanup(shutil.rmtree, state, True)
        d = self.start(["--state-dir", state])
        c = d.client()
        convs = [Conversation(d, c.create_session().session_id) for _ in range(2)]
        for i, conv in enumerate(convs):
            conv.turn(c, prompt(i), max_tokens=4, context=f"before restart {i}")
        d.stop()
        d2 = self.start(["--state-dir", state], name="xlstmd(paper, restarted)")
        c2 = d2.client()
        for i, conv in enumerate(convs):
            conv.daemon = d2
            conv.check_session(c2, f"restored session {i}")
            conv.turn(c2, prompt(i + 3)[:4], max_tokens=4, context=f"after restart {i}")

    def test_export_import_into_another_daemon(self):
        a = self.start(name="xlstmd(paper a)")
        b = self.start(name="xlstmd(paper b)")
        ca, cb = a.client(), b.client()
        conv = Conversation(a, ca.create_session().session_id)
        conv.turn(ca, prompt(1), max_tokens=5, context="on a")
        snapshot = ca.export_session(conv.session_id)
        moved = Conversation(b, cb.import_session(snapshot).session_id, conv.history, conv.version)
        moved.check_session(cb, "imported")
        moved.turn(cb, prompt(2)[:3], max_tokens=5, context="continued on b")

    def test_rewind_and_fork_continue_from_kept_checkpoints(self):
        d = self.start(["--keep-turn-checkpoints", "2"])
        c = d.client()
        s = c.create_session().session_id
        history = []
        for k in range(3):
            inp = prompt(k)[:4]
            t = c.turn(s, tokens=inp, sampling=sampling(max_tokens=5))
            self.assertEqual(t.ids, d.reference(sum(history, []) + inp, 5), f"turn {k}")
            history.append(inp + t.ids)
        self.assertEqual(c.rewind_session(s, 1).version, 1)
        edited = c.turn(s, tokens=[55, 56], sampling=sampling(max_tokens=5))
        self.assertEqual(edited.ids, d.reference(history[0] + [55, 56], 5),
                         "a turn after a rewind == replay of the kept history + new input")
        f = c.fork_session(s, version=1)
        branch = c.turn(f.session_id, tokens=[55, 56], sampling=sampling(max_tokens=5))
        self.assertEqual(branch.ids, edited.ids, "a fork at v1 continues like the rewind to v1")

    def test_a_session_moves_between_daemons_through_redis(self):
        redis = RedisServer()
        self.addCleanup(redis.stop)
        a = self.start(["--redis-url", redis.url], name="xlstmd(paper A)")
        b = self.start(["--redis-url", redis.url], name="xlstmd(paper B)")
        ca, cb = a.client(), b.client()
        s = ca.create_session().session_id
        history = []
        for k, (client, daemon) in enumerate(((ca, a), (cb, b), (ca, a))):
            inp = prompt(k)[:3]
            t = client.turn(s, tokens=inp, sampling=sampling(max_tokens=5))
            self.assertEqual(t.ids, daemon.reference(history + inp, 5),
                             f"turn {k} on {daemon.name} == replay of the whole history")
            history += inp + t.ids

    def test_snapshots_of_the_other_family_are_refused(self):
        paper = self.start(name="xlstmd(paper)")
        large = self.start_daemon(name="xlstmd(large)")
        cp, cl = paper.client(), large.client()
        sp = cp.create_session().session_id
        Conversation(paper, sp).turn(cp, prompt(0), max_tokens=2)
        sl = cl.create_session().session_id
        Conversation(large, sl).turn(cl, prompt(0), max_tokens=2)
        for src, dst, other in ((cp, cl, "paper-v1"), (cl, cp, "mlstm-v1")):
            snapshot = src.export_session(sp if src is cp else sl)
            with self.assertRaises(grpc.RpcError) as e:
                dst.import_session(snapshot)
            self.assertEqual(e.exception.code(), Code.FAILED_PRECONDITION, e.exception.details())
            self.assertIn(other, e.exception.details())
        paper.assert_serving("after the foreign imports")
        large.assert_serving("after the foreign imports")


if __name__ == "__main__":
    harness.main()
