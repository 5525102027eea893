#!/usr/bin/python3
"""E2E: ExportSession / ImportSession over gRPC (issue 5, requirement 4).

A client can take a session's state out as a snapshot and bring it back, into the same
daemon or another one serving the same model, and the imported session continues exactly
like the original (and like `xlstm generate` over its history). What must be refused is
refused with the documented code: a corrupt or truncated snapshot INVALID_ARGUMENT, a
snapshot of another model FAILED_PRECONDITION, a stream larger than any snapshot of this
model RESOURCE_EXHAUSTED (as soon as it is, without buffering the rest), an unknown session
NOT_FOUND, a session with a turn running ABORTED. Large states go out in chunks of at most
1 MiB, the first one carrying the total size. Tenancy applies as everywhere else.
"""

import os
import shutil
import subprocess
import tempfile
import threading

import grpc

import harness
from harness import Conversation, sampling

Code = grpc.StatusCode
PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]
MiB = 1 << 20


def mkmodel(out, *flags):
    """A random model from `xlstm mkmodel` (float32, vocabulary 300: the byte tokenizer)."""
    cmd = [harness.CONFIG.xlstm, "mkmodel", "--family", "xlstm", "--vocab", "300",
           "--weight-dtype", "f32", "--threads", "1", "--out", out, *flags]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=120)
    return out


def flip(data, offset):
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)


class ExportImportTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xlstmd-e2e-export-")
        cls.daemon = harness.Daemon(["--max-tokens-limit", "1000000"],
                                    name="xlstmd(export)").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        shutil.rmtree(cls.tmp, True)

    def conversation(self, turns=2):
        """A session with `turns` checked greedy turns."""
        c = self.client
        conv = Conversation(self.daemon, c.create_session().session_id)
        for i in range(turns):
            conv.turn(c, [(p + 5 * i) % 300 for p in PROMPT], max_tokens=8,
                      request_id=harness.rid(f"setup-{i}"), context=f"setup turn {i}")
        return conv

    def test_export_import_continues_exactly(self):
        c = self.client
        conv = self.conversation()
        info = self.client.model_info()
        chunks = c.export_chunks(conv.session_id)
        self.assertEqual(len(chunks), 1, "a 17 KB state fits one chunk")
        snapshot = chunks[0].data
        self.assertEqual(chunks[0].total_bytes, len(snapshot), "first chunk: total_bytes")
        self.assertEqual(snapshot[:8], b"XLSTMSS\0", "snapshot magic (docs/snapshot-format.md)")
        self.assertGreater(len(snapshot), info.state_bytes_per_session)
        self.assertLessEqual(len(snapshot), info.max_snapshot_bytes,
                             "ModelInfo.max_snapshot_bytes bounds every snapshot")
        self.assertEqual(c.export_session(conv.session_id), snapshot,
                         "exporting an unchanged session twice gives the same bytes")
        snap_history, snap_version = list(conv.history), conv.version

        # Into the same daemon, in one chunk and in odd small ones, with and without a
        # declared total: each import is a new session at the same version and token count.
        imported = []
        for chunk_bytes, declare in ((MiB, True), (1000, False), (4097, True)):
            s = c.import_session(snapshot, chunk_bytes=chunk_bytes, declare_total=declare)
            self.assertNotEqual(s.session_id, conv.session_id, "an import is a new session")
            self.assertEqual((s.version, s.token_count), (conv.version, len(conv.history)))
            self.assertFalse(s.turn_running)
            imported.append(Conversation(self.daemon, s.session_id, conv.history,
                                         conv.version))
        # The original and every import continue identically (and as the reference says).
        nxt = [33, 44, 55]
        for i, cv in enumerate([conv] + imported):
            cv.turn(c, nxt, max_tokens=10, context=f"continuation {i} after export/import")
        # An import is independent of its source: the source moves on, the import does not.
        conv.turn(c, [1], max_tokens=3)
        again = Conversation(self.daemon, c.import_session(snapshot).session_id,
                             snap_history, snap_version)
        again.check_session(c, "an import of the old snapshot after the source moved on")

        # Into another daemon with the same model and a disk tier; there it survives a
        # restart too, and exports (read back from disk) the same session state.
        sd = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        other = self.start_daemon(["--state-dir", sd], name="xlstmd(import target)")
        oc = other.client()
        s = oc.import_session(snapshot)
        moved = Conversation(other, s.session_id, again.history, again.version)
        moved.check_session(oc, "imported into another daemon")
        other.stop()
        other = self.start_daemon(["--state-dir", sd], name="xlstmd(import target, restarted)")
        oc = other.client()
        moved.daemon = other
        moved.check_session(oc, "the import after a restart")
        from_disk = oc.export_session(s.session_id)
        back = Conversation(self.daemon, c.import_session(from_disk).session_id, moved.history,
                            moved.version)
        back.check_session(c, "an export of a session that was only on disk")
        moved.turn(oc, nxt, max_tokens=10, context="continuation on the other daemon")
        back.turn(c, nxt, max_tokens=10, context="continuation of the round trip")

    def test_corrupt_and_truncated_snapshots_are_invalid_argument(self):
        c = self.client
        conv = self.conversation(turns=1)
        snapshot = c.export_session(conv.session_id)
        before = set(c.all_sessions())
        n = len(snapshot)
        cases = [
            ("a flipped magic byte", flip(snapshot, 0), True),
            ("a flipped header byte", flip(snapshot, 100), True),
            ("a flipped state byte", flip(snapshot, n // 2), True),
            ("a flipped footer byte", flip(snapshot, n - 3), True),
            ("truncated, total not declared", snapshot[:n - 1], False),
            ("truncated to its head, total not declared", snapshot[:200], False),
            ("one trailing byte, total not declared", snapshot + b"\0", False),
            ("garbage", b"hello, world" * 100, False),
        ]
        for what, data, declare in cases:
            self.assertRpcError(lambda: c.import_session(data, chunk_bytes=4096,
                                                         declare_total=declare),
                                Code.INVALID_ARGUMENT, None, what)
        # The stream itself: ended short of its declared total, longer than it, an empty
        # stream, a later chunk contradicting the first one's total.
        short = harness.snapshot_chunks(snapshot, 4096)[:-1]
        self.assertRpcError(lambda: c.import_chunks(short), Code.INVALID_ARGUMENT, "truncated",
                            "stream ends before its declared total")
        longer = harness.snapshot_chunks(snapshot + b"\0" * 10, 4096)
        longer[0].total_bytes = n
        self.assertRpcError(lambda: c.import_chunks(longer), Code.INVALID_ARGUMENT, None,
                            "more bytes than declared")
        self.assertRpcError(lambda: c.import_chunks([]), Code.INVALID_ARGUMENT, None,
                            "an empty stream")
        mixed = harness.snapshot_chunks(snapshot, 4096)
        mixed[1].total_bytes = n + 1
        self.assertRpcError(lambda: c.import_chunks(mixed), Code.INVALID_ARGUMENT, None,
                            "a later chunk declaring another total")
        # Nothing of that created a session or disturbed the source.
        self.assertEqual(sorted(set(c.all_sessions()) - before), [],
                         "a refused import left a session behind")
        conv.turn(c, [9, 8], max_tokens=6, context="the source after the refused imports")
        self.daemon.assert_serving("after corrupt imports")

    def test_oversized_stream_is_resource_exhausted_early(self):
        c = self.client
        cap = c.model_info().max_snapshot_bytes
        self.assertGreater(cap, 0, "ModelInfo.max_snapshot_bytes")
        sent = []

        def endless():
            # Would be 1 GiB; the server must stop the call long before.
            for i in range(1024):
                sent.append(i)
                yield harness.pb().SnapshotChunk(data=b"\0" * MiB)

        self.assertRpcError(lambda: c.import_chunks(endless()), Code.RESOURCE_EXHAUSTED,
                            str(cap), "a stream past the largest snapshot")
        self.assertLess(len(sent), 64, f"the client sent {len(sent)} MiB before the refusal: "
                                       "the server must refuse as soon as the cap is passed")
        declared = [harness.pb().SnapshotChunk(data=b"XLSTMSS\0", total_bytes=cap + 1)]
        self.assertRpcError(lambda: c.import_chunks(declared), Code.RESOURCE_EXHAUSTED, None,
                            "a declared total over the cap")
        self.assertRpcError(
            lambda: c.import_chunks([harness.pb().SnapshotChunk(data=b"\0" * (cap + 1))]),
            Code.RESOURCE_EXHAUSTED, None, "one chunk over the cap")
        self.daemon.assert_serving("after oversized imports")

    def test_export_errors(self):
        c = self.client
        self.assertRpcError(lambda: c.export_session("AAAAAAAAAAAAAAAAAAAAAA"), Code.NOT_FOUND,
                            None, "an unknown session")
        self.assertRpcError(lambda: c.export_session(""), Code.INVALID_ARGUMENT, None,
                            "an empty session id")
        self.assertRpcError(lambda: c.export_session("../../etc/passwd"),
                            Code.INVALID_ARGUMENT, None, "a malformed session id")
        gone = c.create_session().session_id
        c.delete_session(gone)
        self.assertRpcError(lambda: c.export_session(gone), Code.NOT_FOUND, None,
                            "a deleted session")

        # A session with a turn running: its committed state is about to be replaced.
        conv = self.conversation(turns=1)
        reader = harness.StreamReader(
            c.chat_call(conv.session_id, tokens=[1, 2, 3], sampling=sampling(max_tokens=100000),
                        timeout=60),
            pause_after_first_delta=True)
        try:
            reader.wait_first_delta()
            self.assertRpcError(lambda: c.export_session(conv.session_id), Code.ABORTED,
                                None, "a session with a turn running")
        finally:
            reader.call.cancel()
            reader.join(30)
        harness.wait_turn_idle(c, conv.session_id)
        conv.check_session(c, "after the cancelled turn")
        s = c.import_session(c.export_session(conv.session_id))
        self.assertEqual(s.version, conv.version, "exported after the turn was rolled back")

    def test_foreign_model_is_failed_precondition(self):
        c = self.client
        conv = self.conversation(turns=1)
        snapshot = c.export_session(conv.session_id)
        small = mkmodel(os.path.join(self.tmp, "m64"), "--embedding-dim", "64",
                        "--num-blocks", "1", "--num-heads", "2", "--seed", "3")
        # The golden model's layout (E=128, 2 blocks, 4 heads) with other weights.
        twin = mkmodel(os.path.join(self.tmp, "twin"), "--embedding-dim", "128",
                       "--num-blocks", "2", "--num-heads", "4", "--seed", "4")
        for name, model_dir, why in (("other layout", small, "layout"),
                                     ("same layout, other weights", twin, "weights")):
            other = self.start_daemon([], model_dir=model_dir, name=f"xlstmd({name})")
            oc = other.client()
            e = self.assertRpcError(lambda: oc.import_session(snapshot),
                                    Code.FAILED_PRECONDITION, None,
                                    f"golden snapshot into the {name} model")
            self.assertIn(why, e.details(), f"{name}: the message says what differs")
            s = oc.create_session()
            oc.turn(s.session_id, tokens=[5, 6, 7], sampling=sampling(max_tokens=4))
            theirs = oc.export_session(s.session_id)
            self.assertRpcError(lambda: c.import_session(theirs), Code.FAILED_PRECONDITION, None,
                                f"the {name} model's snapshot into the golden daemon")
            other.stop()
        self.daemon.assert_serving("after foreign imports")

    def test_large_state_goes_out_in_chunks(self):
        # One head of 512x512 per block: a 2 MiB state, so an export takes several chunks.
        big = mkmodel(os.path.join(self.tmp, "m512"), "--embedding-dim", "512",
                      "--num-blocks", "2", "--num-heads", "1", "--qk-dim-factor", "1",
                      "--v-dim-factor", "1", "--ffn-proj-factor", "1", "--seed", "5")
        d = self.start_daemon([], model_dir=big, name="xlstmd(2 MiB state)")
        c = d.client()
        info = c.model_info()
        self.assertGreater(info.state_bytes_per_session, 2 * MiB)
        s = c.create_session()
        first = c.turn(s.session_id, tokens=PROMPT, sampling=sampling(max_tokens=6))
        chunks = c.export_chunks(s.session_id)
        sizes = [len(ch.data) for ch in chunks]
        self.assertGreaterEqual(len(chunks), 3, f"chunk sizes {sizes}")
        self.assertTrue(all(n <= MiB for n in sizes), f"a chunk over 1 MiB: {sizes}")
        self.assertTrue(all(n > 0 for n in sizes), f"an empty chunk: {sizes}")
        self.assertEqual(chunks[0].total_bytes, sum(sizes), "total_bytes on the first chunk")
        self.assertTrue(all(ch.total_bytes == 0 for ch in chunks[1:]), "total on later chunks")
        snapshot = b"".join(ch.data for ch in chunks)
        self.assertLessEqual(len(snapshot), info.max_snapshot_bytes)
        copies = [c.import_session(snapshot, chunk_bytes=n) for n in (MiB, 777777)]
        outs = []
        for sid in [s.session_id] + [x.session_id for x in copies]:
            outs.append(c.turn(sid, tokens=[9, 10], sampling=sampling(max_tokens=12)).ids)
        self.assertEqual(outs[1], outs[0], "the import continues like the original")
        self.assertEqual(outs[2], outs[0], "the import (odd chunks) continues like the original")
        self.assertEqual(len(first.ids), 6)

        # A client that stops reading an export after its first chunk: the call ends, the
        # daemon and the session are fine.
        stub = c.channel.unary_stream("/xlstmd.v1.ChatService/ExportSession",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=harness.pb().SnapshotChunk.FromString)
        call = stub(harness.pb().ExportSessionRequest(session_id=s.session_id), timeout=30)
        self.assertGreater(next(call).total_bytes, 0)
        call.cancel()
        d.assert_serving("after a cancelled export")
        t = c.turn(s.session_id, tokens=[1], sampling=sampling(max_tokens=2))
        self.assertEqual(t.finished.session_version, 3)

        # Many concurrent exports and imports of the large state.
        errors = []

        def roundtrip():
            try:
                cl = d.client()
                got = cl.import_session(cl.export_session(s.session_id))
                if got.version != 3:
                    errors.append(f"imported version {got.version}")
            except Exception as e:  # collected and reported below
                errors.append(harness.describe(e))

        threads = [threading.Thread(target=roundtrip) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [], "concurrent export/import round trips")

    def test_tenancy(self):
        keys = os.path.join(self.tmp, "keys")
        with open(keys, "w") as f:
            f.write("alice key-alice-0123456789\nbob key-bob-9876543210\n")
        os.chmod(keys, 0o600)
        d = self.start_daemon(["--api-keys-file", keys], name="xlstmd(export, api-keys)")
        ch = d.channel()
        alice = harness.Client(ch, key="key-alice-0123456789")
        bob = harness.Client(ch, key="key-bob-9876543210")
        anon = harness.Client(ch)
        s = alice.create_session()
        alice.turn(s.session_id, tokens=[1, 2, 3], sampling=sampling(max_tokens=3))
        snapshot = alice.export_session(s.session_id)
        self.assertRpcError(lambda: anon.export_session(s.session_id), Code.UNAUTHENTICATED,
                            None, "export without a key")
        self.assertRpcError(lambda: anon.import_session(snapshot), Code.UNAUTHENTICATED, None,
                            "import without a key")
        self.assertRpcError(lambda: bob.export_session(s.session_id), Code.NOT_FOUND, None,
                            "bob exports alice's session")
        # A snapshot names its owner, but an import belongs to whoever imports it.
        mine = bob.import_session(snapshot)
        self.assertIn(mine.session_id, bob.all_sessions())
        self.assertNotIn(mine.session_id, alice.all_sessions())
        self.assertRpcError(lambda: alice.export_session(mine.session_id), Code.NOT_FOUND, None,
                            "alice exports bob's import")
        t = bob.turn(mine.session_id, tokens=[4], sampling=sampling(max_tokens=3))
        self.assertEqual(t.finished.session_version, 2)


if __name__ == "__main__":
    harness.main()
