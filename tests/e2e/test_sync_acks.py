#!/usr/bin/python3
"""E2E: with --durability sync, session operations the client was told about survive SIGKILL.

Sync durability exists so that a crash never undoes what a client was told had happened.
Turns are covered by test_crash.py; these are the other session operations:

- CreateSession (with or without a system prompt), ForkSession, ImportSession and
  RewindSession: a client that got a session back will use it after a crash; if it was never
  written, its next turn is NOT_FOUND (or continues from the wrong version) and a prefilled
  system prompt is gone. Each operation gets a daemon of its own, SIGKILLed the moment its
  reply arrives, so an acknowledgement sent before the write finished would show.
- DeleteSession: a session deleted before the crash must not come back after it (its data
  may have been deleted for a reason). The kill comes right after the reply while other
  sessions' turns keep the snapshot writer busy, which is when a removal that is only queued
  is lost.
- A turn's `finished` under sync says durable and carries the snapshot's digest.
"""

import os
import shutil
import signal
import tempfile
import threading
import time

import harness
from harness import Conversation, sampling


class SyncAcksTest(harness.E2ETestCase):

    def state_dir(self):
        sd = tempfile.mkdtemp(prefix="xlstmd-e2e-state-")
        self.addCleanup(shutil.rmtree, sd, True)
        return sd

    def kill(self, d):
        d.send_signal(signal.SIGKILL)
        d.wait_exit(20)

    def check_survives(self, what, extra_args, setup, act, check):
        """Runs `setup(client)` (durable before the operation), then `act(client, prepared)`
        and SIGKILLs the daemon the moment the reply arrives; after a restart on the same
        state dir, `check(client, prepared, reply)` must hold."""
        sd = self.state_dir()
        args = ["--state-dir", sd, "--durability", "sync"] + extra_args
        d = self.start_daemon(args, name=f"xlstmd(sync {what})")
        c = d.client()
        prepared = setup(c)
        reply = act(c, prepared)
        d.send_signal(signal.SIGKILL)  # at once: no time for a write still in flight
        files = sorted(os.listdir(sd))
        d.wait_exit(20)
        d2 = self.start_daemon(args, name=f"xlstmd(sync {what}, restarted)")
        try:
            check(d2, d2.client(), prepared, reply)
        except AssertionError as e:
            raise AssertionError(f"{what}: acknowledged under --durability sync, lost by a "
                                 f"SIGKILL right after the reply ({e}); state dir before the "
                                 f"kill: {files}") from None

    def test_finished_says_durable_with_the_snapshot_digest(self):
        """Under sync durability a turn's `finished` says durable, and its state_digest is the
        snapshot's footer checksum: the last 8 bytes of the file on disk and of an export of
        that version. Under async it says not durable (the write comes later)."""
        sd = self.state_dir()
        d = self.start_daemon(["--state-dir", sd, "--durability", "sync"],
                              name="xlstmd(sync digest)")
        c = d.client()
        s = c.create_session().session_id
        for k in range(2):
            t = c.turn(s, tokens=[5 + k, 6], sampling=sampling(max_tokens=3))
            self.assertTrue(t.finished.durable, f"turn {k}: sync, yet not durable")
            files = [f for f in os.listdir(sd) if f.endswith(".xss")]
            self.assertEqual(len(files), 1, files)
            with open(os.path.join(sd, files[0]), "rb") as f:
                on_disk = f.read()
            tail = int.from_bytes(on_disk[-8:], "little")
            self.assertEqual(t.finished.state_digest, tail, f"turn {k}: digest vs the file")
            exported = c.export_session(s)
            self.assertEqual(int.from_bytes(exported[-8:], "little"), t.finished.state_digest,
                             f"turn {k}: digest vs the export")
        d.stop()
        a = self.start_daemon(["--state-dir", self.state_dir(), "--durability", "async"],
                              name="xlstmd(async digest)")
        c = a.client()
        t = c.turn(c.create_session().session_id, tokens=[5, 6], sampling=sampling(max_tokens=3))
        self.assertFalse(t.finished.durable)
        self.assertEqual(t.finished.state_digest, 0)

    def test_acknowledged_creates_survive_an_immediate_sigkill(self):
        def check_plain(d2, c2, _, s):
            self.assertIn(s.session_id, c2.all_sessions())
            Conversation(d2, s.session_id).turn(c2, [155, 60, 131], max_tokens=6,
                                                context="first turn after the restart")
        self.check_survives("create", [], lambda c: None,
                            lambda c, _: c.create_session(), check_plain)

        def check_prompted(d2, c2, _, s):
            got = c2.get_session(s.session_id)
            self.assertEqual((got.version, got.token_count), (0, s.token_count),
                             "the prefilled system prompt")
        self.check_survives("create with a system prompt", [], lambda c: None,
                            lambda c, _: c.create_session(system_prompt="You answer in one word."),
                            check_prompted)

    def test_acknowledged_fork_import_and_rewind_survive_an_immediate_sigkill(self):
        def with_two_turns(c):
            s = c.create_session().session_id
            c.turn(s, tokens=[155, 60, 131], sampling=sampling(max_tokens=3))
            c.turn(s, tokens=[5, 6], sampling=sampling(max_tokens=3))
            return s

        def same_as_reply(d2, c2, src, s):
            got = c2.get_session(s.session_id)
            self.assertEqual((got.version, got.token_count), (s.version, s.token_count))

        self.check_survives("fork", [], with_two_turns,
                            lambda c, src: c.fork_session(src), same_as_reply)

        def export_then_delete(c):
            src = with_two_turns(c)
            snapshot = c.export_session(src)
            c.delete_session(src)
            return snapshot
        self.check_survives("import", [], export_then_delete,
                            lambda c, snapshot: c.import_session(snapshot), same_as_reply)

        def rewound(d2, c2, src, s):
            self.assertEqual(s.version, 1)
            same_as_reply(d2, c2, src, s)
            # The next turn continues version 1, not the version the rewind undid.
            t = c2.turn(src, tokens=[7], sampling=sampling(max_tokens=2))
            self.assertEqual(t.finished.session_version, 2)
        self.check_survives("rewind", ["--keep-turn-checkpoints", "2"], with_two_turns,
                            lambda c, src: c.rewind_session(src, 1), rewound)

    def test_deleted_session_stays_deleted_after_sigkill(self):
        sd = self.state_dir()
        args = ["--state-dir", sd, "--durability", "sync", "--io-threads", "1"]
        d = self.start_daemon(args, name="xlstmd(sync delete)")
        c = d.client()
        ids = [c.create_session().session_id for _ in range(50)]
        for s in ids:
            c.turn(s, tokens=[1, 2, 3], sampling=sampling(max_tokens=2))
        victim = ids[0]
        self.assertIn(victim + ".xss", os.listdir(sd), "test design: the victim is on disk")

        def busy(sid):
            try:
                c.turn(sid, tokens=[4], sampling=sampling(max_tokens=1))
            except Exception:  # the kill ends these calls; only the delete matters here
                pass

        others = [threading.Thread(target=busy, args=(s,), daemon=True) for s in ids[1:]]
        for th in others:
            th.start()
        time.sleep(0.01)
        c.delete_session(victim)
        self.kill(d)
        for th in others:
            th.join(10)

        d2 = self.start_daemon(args, name="xlstmd(sync delete, restarted)")
        self.assertNotIn(victim, d2.client().all_sessions(),
                         "a session deleted (and acknowledged) before the SIGKILL is back")


if __name__ == "__main__":
    harness.main()
