#!/usr/bin/python3
"""E2E: a host budget of about one state and two slots, with many sessions (issue 5,
requirement 1).

Idle states leave the slots for host RAM, host RAM overflows to the disk tier, and a turn
on a session that is only on disk restores it first. Whatever tier a session's state went
through, every turn must still equal `xlstm generate` over the session's history, exactly as
with no limits at all. With --durability none the state dir holds only spilled states, so
its files show the spilling happened. Without a disk tier the same budget caps the number of
sessions instead (RESOURCE_EXHAUSTED), since every state must fit somewhere.
"""

import os
import shutil
import tempfile
import threading
import time

import grpc

import harness
from harness import Conversation

Code = grpc.StatusCode
HOST_BUDGET = 20000  # bytes: one golden f32 state (17024) fits, two do not
SESSIONS = 10
PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]


def xss_files(state_dir):
    return sorted(f for f in os.listdir(state_dir) if f.endswith(".xss"))


class SpillTest(harness.E2ETestCase):

    def test_many_sessions_through_one_host_state_and_two_slots(self):
        sd = tempfile.mkdtemp(prefix="xlstmd-e2e-spill-")
        self.addCleanup(shutil.rmtree, sd, True)
        args = ["--state-dir", sd, "--durability", "none", "--slots", "2",
                "--host-state-bytes", str(HOST_BUDGET)]
        d = self.start_daemon(args, name="xlstmd(spill)")
        c = d.client()
        state_bytes = c.model_info().state_bytes_per_session
        self.assertTrue(state_bytes <= HOST_BUDGET < 2 * state_bytes,
                        f"test design: the budget must hold exactly one {state_bytes}-byte state")

        convs = [Conversation(d, c.create_session().session_id) for _ in range(SESSIONS)]
        for i, conv in enumerate(convs):
            conv.turn(c, [(p + i) % 300 for p in PROMPT], max_tokens=6,
                      context=f"first turn of session {i}")
        files = xss_files(sd)
        self.assertGreaterEqual(len(files), SESSIONS - 3,
                                f"at most 2 resident + 1 host state; the rest must be on disk: "
                                f"{files}")

        # Concurrent turns on different sessions: restores from disk while others run.
        errors = []

        def run(conv_slice, tag):
            try:
                cl = d.client()
                for rnd in range(3):
                    for conv in conv_slice:
                        conv.turn(cl, [rnd + 3, len(conv.history) % 300], max_tokens=5,
                                  context=f"{tag} round {rnd}")
            except Exception as e:  # collected and reported below
                errors.append(f"{tag}: {harness.describe(e)}")

        threads = [threading.Thread(target=run, args=(convs[k::3], f"thread {k}"))
                   for k in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertEqual(errors, [], "turns through spilled states")

        # Fork and export of a session whose state is only on disk.
        oldest = convs[0]
        fork = c.fork_session(oldest.session_id)
        forked = Conversation(d, fork.session_id, oldest.history, oldest.version)
        forked.check_session(c, "fork of a spilled session")
        imported = Conversation(d, c.import_session(c.export_session(convs[1].session_id))
                                .session_id, convs[1].history, convs[1].version)
        for conv, what in ((forked, "the fork"), (oldest, "the fork's source"),
                           (imported, "an import of a spilled session's export")):
            conv.turn(c, [42, 43], max_tokens=6, context=what)

        # A deleted session leaves the disk tier too.
        victim = convs.pop()
        c.delete_session(victim.session_id)
        # The file goes on an I/O thread, just after the reply.
        deadline = time.monotonic() + 10
        while victim.session_id + ".xss" in xss_files(sd) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertNotIn(victim.session_id + ".xss", xss_files(sd),
                         "a deleted session's snapshot stays in the state dir")

        # And all of it survives a restart with the same limits.
        d.stop()
        d2 = self.start_daemon(args, name="xlstmd(spill, restarted)")
        c2 = d2.client()
        for i, conv in enumerate(convs + [forked, imported]):
            conv.daemon = d2
            conv.check_session(c2, f"session {i} after the restart")
            conv.turn(c2, [7], max_tokens=4, context=f"session {i} after the restart")

    def test_without_a_disk_tier_the_budget_caps_the_sessions(self):
        # 1 host state + 2 slots - 2 slots a running turn may need = 1 session.
        d = self.start_daemon(["--slots", "2", "--host-state-bytes", str(HOST_BUDGET)],
                              name="xlstmd(host budget, no disk)")
        c = d.client()
        conv = Conversation(d, c.create_session().session_id)
        self.assertRpcError(lambda: c.create_session(), Code.RESOURCE_EXHAUSTED, None,
                            "a second session beyond what host RAM and the slots can hold")
        conv.turn(c, PROMPT, max_tokens=6, context="the one session")
        c.delete_session(conv.session_id)
        conv = Conversation(d, c.create_session().session_id)
        conv.turn(c, PROMPT, max_tokens=6, context="a session after the delete")


if __name__ == "__main__":
    harness.main()
