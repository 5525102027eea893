#!/usr/bin/python3
"""E2E: with --durability sync, session operations the client was told about survive SIGKILL.

Sync durability exists so that a crash never undoes what a client was told had happened.
Turns are covered by test_crash.py; these are the other session operations:

- CreateSession (with or without a system prompt): a client that got a session id back will
  use it after a crash; if the session was never written, its next turn is NOT_FOUND and a
  prefilled system prompt is gone. The kill comes a full second after the reply, so this is
  not a race with a write in flight.
- DeleteSession: a session deleted before the crash must not come back after it (its data
  may have been deleted for a reason). The kill comes right after the reply while other
  sessions' turns keep the snapshot writer busy, which is when a removal that is only queued
  is lost.
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

    def test_created_sessions_survive_sigkill(self):
        sd = self.state_dir()
        args = ["--state-dir", sd, "--durability", "sync"]
        d = self.start_daemon(args, name="xlstmd(sync creates)")
        c = d.client()
        plain = c.create_session()
        prompted = c.create_session(system_prompt="You answer in one word.")
        time.sleep(1.0)
        files = sorted(os.listdir(sd))
        self.kill(d)

        d2 = self.start_daemon(args, name="xlstmd(sync creates, restarted)")
        c2 = d2.client()
        listed = c2.all_sessions()
        missing = [what for what, s in (("created without a system prompt", plain),
                                        ("created with a system prompt", prompted))
                   if s.session_id not in listed]
        self.assertEqual(missing, [], f"acknowledged sessions lost by a SIGKILL under "
                                      f"--durability sync; state dir before the kill: {files}")
        got = c2.get_session(prompted.session_id)
        self.assertEqual((got.version, got.token_count), (0, prompted.token_count),
                         "the system-prompt session's prefilled prompt")
        conv = Conversation(d2, plain.session_id)
        conv.turn(c2, [155, 60, 131], max_tokens=6, context="first turn after the restart")

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
