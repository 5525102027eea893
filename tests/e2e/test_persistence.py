#!/usr/bin/python3
"""E2E: sessions survive a restart on the same --state-dir (issue 5, requirements 1-3).

For each durability mode the daemon holds a mix of sessions (raw-token turns with request
ids, a system-prompt session with message turns, an untouched new session, a deleted one),
is stopped, and a new daemon on the same directory must resume every session exactly:
same version and token count, the last request id still ALREADY_EXISTS, and the next turn
bit-exact equal to `xlstm generate` over everything the session consumed (or, for message
turns, to the same conversation replayed on a fresh session). `none` and `async` are
stopped with SIGTERM (the drain writes what is missing); `sync` with SIGKILL (every
acknowledged turn is already on disk).

Also: a corrupt snapshot in the directory at startup is quarantined and its session is
NOT_FOUND while the others load; a snapshot whose state bytes are damaged is found on first
use (DATA_LOSS, quarantined); and the option errors around the state dir.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile

import grpc

import harness
from harness import Conversation, sampling

Code = grpc.StatusCode
PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]
SYSTEM = "You answer in one word."
MESSAGES = ["Hello there", "What is an xLSTM?"]


def snapshot_files(state_dir):
    return sorted(f[:-4] for f in os.listdir(state_dir) if f.endswith(".xss"))


def quarantined(state_dir):
    q = os.path.join(state_dir, "quarantine")
    return sorted(os.listdir(q)) if os.path.isdir(q) else []


class PersistenceTest(harness.E2ETestCase):

    def state_dir(self):
        d = tempfile.mkdtemp(prefix="xlstmd-e2e-state-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def start(self, state_dir, extra=(), name="xlstmd"):
        return self.start_daemon(["--state-dir", state_dir, *extra], name=name)

    def populate(self, d):
        """Sessions of every kind; returns what the test knows about them."""
        c = d.client()
        convs = []
        for i in range(3):
            conv = Conversation(d, c.create_session().session_id)
            for k in range(1 + i % 2):
                inp = [(PROMPT[j] + 7 * i + k) % 300 for j in range(len(PROMPT))]
                conv.turn(c, inp, max_tokens=6 + i, request_id=harness.rid(f"conv{i}-turn{k}"),
                          context=f"before restart: conv {i} turn {k}")
            conv.last_request = (harness.rid(f"conv{i}-turn{k}"), inp, 6 + i)
            convs.append(conv)
        # Version 0 with the zero state: on disk before the ack under sync, else written by
        # the drain.
        fresh = Conversation(d, c.create_session().session_id)
        chat = c.create_session(system_prompt=SYSTEM)
        chat_turns = [c.turn(chat.session_id, message=MESSAGES[0],
                             sampling=sampling(max_tokens=5))]
        gone = c.create_session().session_id
        harness.collect(c.chat_call(gone, tokens=[1, 2, 3], sampling=sampling(max_tokens=2)))
        c.delete_session(gone)
        return {"convs": convs, "fresh": fresh, "chat": chat.session_id,
                "chat_info": c.get_session(chat.session_id), "chat_turns": chat_turns,
                "gone": gone}

    def check_resumed(self, d, known, mode):
        """The restarted daemon `d` holds exactly the known sessions, each exactly resumed."""
        c = d.client()
        convs, fresh = known["convs"], known["fresh"]
        want = [cv.session_id for cv in convs] + [known["chat"]]
        if fresh is not None:
            want.append(fresh.session_id)
        want.sort()
        self.assertEqual(sorted(c.all_sessions()), want,
                         f"{mode}: ListSessions after the restart (the deleted session must "
                         "stay deleted, every other one must be back)")
        self.assertRpcError(lambda: c.get_session(known["gone"]), Code.NOT_FOUND, None,
                            f"{mode}: the session deleted before the restart")
        for i, conv in enumerate(convs):
            ctx = f"{mode}: conv {i} after the restart"
            conv.daemon = d
            conv.check_session(c, ctx)
            rid, inp, max_tokens = conv.last_request
            e = self.assertRpcError(
                lambda: harness.collect(c.chat_call(conv.session_id, tokens=inp,
                                                    sampling=sampling(max_tokens=max_tokens),
                                                    request_id=rid)),
                Code.ALREADY_EXISTS, None, f"{ctx}: re-sending committed request {rid}")
            self.assertIn(str(conv.version), e.details(), f"{ctx}: the message names the version")
            # The body's fingerprint survived the restart too.
            self.assertRpcError(
                lambda: harness.collect(c.chat_call(conv.session_id, tokens=inp + [1],
                                                    sampling=sampling(max_tokens=max_tokens),
                                                    request_id=rid)),
                Code.INVALID_ARGUMENT, "different request", f"{ctx}: {rid} with another body")
            conv.turn(c, [11, 22, 33], max_tokens=8, request_id=harness.rid(f"{rid}-after"),
                      context=ctx)
            conv.turn(c, [44], max_tokens=4, context=ctx)
        if fresh is not None:
            fresh.daemon = d
            fresh.check_session(c, f"{mode}: the untouched session")
            fresh.turn(c, PROMPT, max_tokens=8,
                       context=f"{mode}: first turn of the untouched session")

        # The system-prompt session: its template flags survived too, so its next message
        # turn appends exactly what the same conversation's second turn appends on a session
        # that never left memory, and generates the same reply.
        info = c.get_session(known["chat"])
        self.assertEqual((info.version, info.token_count),
                         (known["chat_info"].version, known["chat_info"].token_count),
                         f"{mode}: the system-prompt session's version and token count")
        resumed = c.turn(known["chat"], message=MESSAGES[1], sampling=sampling(max_tokens=6))
        replay = c.create_session(system_prompt=SYSTEM)
        first = c.turn(replay.session_id, message=MESSAGES[0], sampling=sampling(max_tokens=5))
        self.assertEqual((first.input_ids, first.ids),
                         (known["chat_turns"][0].input_ids, known["chat_turns"][0].ids),
                         f"{mode}: replay of the first message turn")
        second = c.turn(replay.session_id, message=MESSAGES[1], sampling=sampling(max_tokens=6))
        self.assertEqual(resumed.input_ids, second.input_ids,
                         f"{mode}: the resumed message turn's template ids (a lost session-start "
                         "flag would put the system prompt in again)")
        self.assertEqual(resumed.ids, second.ids, f"{mode}: the resumed message turn's reply")

    def restart_cycle(self, mode, hard_kill):
        sd = self.state_dir()
        extra = ["--durability", mode]
        d = self.start(sd, extra, name=f"xlstmd({mode})")
        self.assertRegex(d.log(), rf"listen=\S+ state_dir={re.escape(sd)} durability={mode}",
                         "the startup line names the state dir and the durability")
        known = self.populate(d)
        if hard_kill:
            # Sync durability acknowledges a create only once its file is durable, so the
            # untouched session survives the kill too.
            d.send_signal(signal.SIGKILL)
            d.wait_exit(20)
        else:
            d.stop()
            m = re.search(r"flushed to \S+: (\d+) snapshot\(s\) written", d.log())
            self.assertIsNotNone(m, f"{mode}: the drain logs its flush to the state dir")
            if mode == "none":
                # Nothing was written before the drain in this mode.
                self.assertGreaterEqual(int(m.group(1)), len(known["convs"]) + 2,
                                        "none: the drain wrote every session")
        self.assertTrue(snapshot_files(sd), f"{mode}: no snapshot files in {sd}")
        d2 = self.start(sd, extra, name=f"xlstmd({mode}, restarted)")
        self.check_resumed(d2, known, mode)
        # And once more: what the restarted daemon committed survives its own restart.
        convs = known["convs"]
        d2.stop()
        d3 = self.start(sd, extra, name=f"xlstmd({mode}, restarted twice)")
        c3 = d3.client()
        for conv in convs:
            conv.daemon = d3
            conv.check_session(c3, f"{mode}: second restart")
            conv.turn(c3, [7, 8, 9], max_tokens=6, context=f"{mode}: after the second restart")
        d3.stop()

    def test_durability_none_survives_sigterm(self):
        self.restart_cycle("none", hard_kill=False)

    def test_durability_async_survives_sigterm(self):
        self.restart_cycle("async", hard_kill=False)

    def test_durability_sync_survives_sigkill(self):
        self.restart_cycle("sync", hard_kill=True)

    def test_corrupt_snapshots_are_quarantined(self):
        sd = self.state_dir()
        d = self.start(sd, ["--durability", "sync"], name="xlstmd(corrupt, before)")
        c = d.client()
        convs = []
        for i in range(4):
            conv = Conversation(d, c.create_session().session_id)
            conv.turn(c, [(p + i) % 300 for p in PROMPT], max_tokens=6)
            convs.append(conv)
        d.stop()
        bad_head, bad_state, truncated, good = convs
        path = lambda conv: os.path.join(sd, conv.session_id + ".xss")  # noqa: E731

        def flip(conv, offset):
            with open(path(conv), "r+b") as f:
                f.seek(offset)
                b = f.read(1)
                f.seek(offset)
                f.write(bytes([b[0] ^ 0x40]))

        flip(bad_head, 130)  # inside the header: its checksum no longer matches
        flip(bad_state, os.path.getsize(path(bad_state)) - 24 - 100)  # inside the state
        with open(path(truncated), "r+b") as f:
            f.truncate(os.path.getsize(path(truncated)) // 2)
        with open(os.path.join(sd, "notes.txt"), "w") as f:
            f.write("not a snapshot\n")
        leftover = os.path.join(sd, f".tmp.{good.session_id}.0123456789abcdef")
        with open(leftover, "wb") as f:
            f.write(b"half a write")

        d2 = self.start(sd, ["--durability", "sync"], name="xlstmd(corrupt, after)")
        c2 = d2.client()
        self.assertFalse(os.path.exists(leftover), "a leftover temp file is removed at startup")
        q = quarantined(sd)
        # A damaged header and a file whose size differs from the one its header states are
        # found by the startup index (it reads the heads and the sizes).
        for conv, what in ((bad_head, "a damaged header"), (truncated, "a truncated file")):
            self.assertTrue(any(conv.session_id in f for f in q),
                            f"the snapshot with {what} is in quarantine/: {q}")
            self.assertFalse(os.path.exists(path(conv)), f"{what}: still in the state dir")
            self.assertRpcError(lambda: c2.get_session(conv.session_id), Code.NOT_FOUND, None,
                                f"GetSession of the session with {what}")
            self.assertRpcError(
                lambda: harness.collect(c2.chat_call(conv.session_id, tokens=[1],
                                                     sampling=sampling(max_tokens=2))),
                Code.NOT_FOUND, None, f"a turn on the session with {what}")
        self.assertTrue(any("notes.txt" in f for f in q), f"a stray file is quarantined: {q}")
        self.assertTrue(any(f.endswith(".why") for f in q), f"quarantine keeps the reasons: {q}")
        self.assertRegex(d2.log(), r"quarantin", "the daemon logs what it quarantined")

        # The intact session loads and continues exactly.
        good.daemon = d2
        good.check_session(c2, "the intact session")
        good.turn(c2, [5, 6, 7], max_tokens=8, context="the intact session after the restart")

        # Damaged state bytes are found when the state is first loaded (startup reads only the
        # heads; loading is lazy): the turn fails with DATA_LOSS, the file goes to
        # quarantine, and the session is never served from it.
        listed = c2.all_sessions()
        for conv, what in ((bad_state, "damaged state bytes"),):
            self.assertIn(conv.session_id, listed, f"{what}: the intact head is indexed")
            self.assertRpcError(
                lambda: harness.collect(c2.chat_call(conv.session_id, tokens=[1],
                                                     sampling=sampling(max_tokens=2))),
                Code.DATA_LOSS, None, f"a turn on a session with {what}")
            self.assertFalse(os.path.exists(path(conv)), f"{what}: the file left the dir")
            self.assertTrue(any(conv.session_id in f for f in quarantined(sd)),
                            f"{what}: the file is in quarantine/")
            self.assertRpcError(
                lambda: harness.collect(c2.chat_call(conv.session_id, tokens=[1],
                                                     sampling=sampling(max_tokens=2))),
                Code.DATA_LOSS, None, f"a second turn on the session with {what}")
        d2.assert_serving("after the corrupt snapshots")
        good.turn(c2, [8], max_tokens=4, context="the intact session, later")
        # A session whose state is lost still exists (GetSession answers), so exporting it is
        # DATA_LOSS like its turns, not NOT_FOUND (which would also name a server path).
        for conv, what in ((bad_state, "damaged state bytes"),):
            e = self.assertRpcError(lambda: c2.export_session(conv.session_id),
                                    Code.DATA_LOSS, None, f"exporting the session with {what}")
            self.assertNotIn(sd, e.details(), "the error does not name server paths")

    def test_state_dir_option_errors(self):
        def run(args):
            cmd = [harness.CONFIG.xlstmd, "--model", harness.golden_dir(),
                   "--listen", "127.0.0.1:0", "--threads", "1", *args]
            env = {k: v for k, v in os.environ.items() if not k.startswith("XLSTMD_")}
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, timeout=60, env=env)

        p = run(["--durability", "sync"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--durability sync needs --state-dir", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)

        # Without a disk tier the host budget must hold at least one session's state.
        p = run(["--host-state-bytes", "0", "--slots", "1"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("host state budget", p.stderr)

        # A state dir that is a file: a clear startup error, exit 2.
        f = os.path.join(self.state_dir(), "file")
        open(f, "w").close()
        p = run(["--state-dir", f])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f, p.stderr)

        # Two daemons on one state dir: the second one refuses to start (it would delete the
        # first one's in-flight temp files).
        sd = self.state_dir()
        self.start(sd, name="xlstmd(owner of the dir)")
        p = run(["--state-dir", sd])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(sd, p.stderr)
        # ... and says so, naming the flag, not the model.
        self.assertIn(f"--state-dir {sd}: state directory {sd} is in use by another xlstmd",
                      p.stderr)
        self.assertNotIn("model", p.stderr.splitlines()[-1])


if __name__ == "__main__":
    harness.main()
