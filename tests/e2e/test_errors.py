#!/usr/bin/python3
"""E2E (d): every error path answers with its status code, and nothing crashes, hangs or leaks.

Codes (DESIGN.md section 5, core/engine/engine.h): unknown or foreign session NOT_FOUND;
missing/bad API key UNAUTHENTICATED; a second turn on a busy session or an expected_version
mismatch ABORTED; a committed request_id ALREADY_EXISTS naming the version (and it does not
run twice); no input, empty tokens, out-of-vocab ids, invalid UTF-8, bad sampling parameters
INVALID_ARGUMENT, and so are a whitespace-only message, both members of the `input` oneof, a
prompt over --max-prompt-tokens and max_tokens over --max-tokens-limit (each with a
google.rpc.BadRequest naming the field); a message over --max-message-bytes, sessions over
--max-sessions, a full queue RESOURCE_EXHAUSTED (capacity ones with ErrorInfo, RetryInfo and
grpc-retry-pushback-ms). NaN logits from a broken checkpoint: INTERNAL, the session untouched.
After every error the daemon must still be alive and SERVING, the session untouched, and (with
--slots 2) two sessions must still be able to run turns at the same time.
"""

import json
import math
import os
import re
import shutil
import tempfile
import time

import grpc
import numpy as np

import harness
from harness import sampling

Code = grpc.StatusCode
LONG = 1_000_000
MAX_PROMPT = 64
MAX_MESSAGE_BYTES = 4096


def consume(call_fn):
    """Wraps a Chat call so assertRpcError sees the stream's final status."""
    return lambda: harness.collect(call_fn())


class ErrorsTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.daemon = harness.Daemon(
            ["--slots", "2", "--max-batch", "2", "--max-prompt-tokens", str(MAX_PROMPT),
             "--max-tokens-limit", str(LONG), "--max-message-bytes", str(MAX_MESSAGE_BYTES)],
            name="xlstmd(errors)").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def new_session(self, turns=1):
        c = self.client
        s = c.create_session()
        for k in range(turns):
            c.turn(s.session_id, tokens=[10 + k, 20 + k], sampling=sampling(max_tokens=3))
        return c.get_session(s.session_id)

    def expect(self, fn, code, contains=None, context=""):
        err = self.assertRpcError(fn, code, contains, context)
        self.daemon.assert_serving(f"after {context}")
        return err

    def expect_chat(self, code, context, contains=None, **kw):
        """A Chat call on a fresh session with one committed turn must fail with `code` and
        leave the session exactly as it was."""
        c = self.client
        s = self.new_session()
        kw.setdefault("tokens", [1, 2, 3])
        err = self.expect(consume(lambda: c.chat_call(s.session_id, **kw)), code, contains,
                          context)
        after = harness.wait_turn_idle(c, s.session_id)
        self.assertEqual((after.version, after.token_count), (s.version, s.token_count),
                         f"{context}: the failed turn changed the session")
        return err

    # ---------------------------------------------------------------- NOT_FOUND

    def test_unknown_session_not_found(self):
        c = self.client
        gone = c.create_session().session_id
        c.delete_session(gone)
        real = c.create_session().session_id
        mutated = real[:-4] + ("AAAA" if real[-4:] != "AAAA" else "BBBB")
        for sid in (gone, mutated):
            ctx = f"unknown session {sid!r}"
            self.expect(lambda: c.get_session(sid), Code.NOT_FOUND, None, f"GetSession, {ctx}")
            self.expect(consume(lambda: c.chat_call(sid, tokens=[1])), Code.NOT_FOUND, None,
                        f"Chat, {ctx}")
            self.expect(lambda: c.fork_session(sid), Code.NOT_FOUND, None, f"ForkSession, {ctx}")
            self.expect(lambda: c.delete_session(sid), Code.NOT_FOUND, None,
                        f"DeleteSession, {ctx}")
        # Malformed ids are bad input or simply unknown; either way a clean error.
        for sid in ("", "x" * 1000, "../../etc/passwd", "sess_\u00e9\u00e9"):
            for name, fn in (("GetSession", lambda: c.get_session(sid)),
                             ("Chat", consume(lambda: c.chat_call(sid, tokens=[1])))):
                try:
                    fn()
                    self.fail(f"{name} with session id {sid[:20]!r} succeeded")
                except grpc.RpcError as e:
                    self.assertIn(e.code(), (Code.NOT_FOUND, Code.INVALID_ARGUMENT),
                                  f"{name} with session id {sid[:20]!r}: {e.details()}")
                self.daemon.assert_serving(f"{name} with a malformed id")

    # ---------------------------------------------------------------- ABORTED

    def test_second_turn_on_busy_session_aborted(self):
        c = self.client
        s = self.new_session()
        reader = harness.StreamReader(c.chat_call(s.session_id, tokens=[7],
                                                  sampling=sampling(max_tokens=LONG)))
        try:
            reader.wait_first_delta()
            self.assertTrue(c.get_session(s.session_id).turn_running,
                            "GetSession.turn_running during a turn")
            self.expect(consume(lambda: c.chat_call(s.session_id, tokens=[8],
                                                    sampling=sampling(max_tokens=2))),
                        Code.ABORTED, None, "second concurrent turn")
            self.expect(lambda: c.delete_session(s.session_id), Code.ABORTED, None,
                        "DeleteSession while a turn runs")
            # A fork copies the committed state (version 1), never the running turn's.
            try:
                f = c.fork_session(s.session_id)
                self.assertEqual((f.version, f.token_count), (s.version, s.token_count),
                                 "a fork taken during a turn must copy the committed state")
            except grpc.RpcError as e:
                self.assertEqual(e.code(), Code.ABORTED, f"fork of a busy session: {e.details()}")
            self.assertIsNone(reader.error, "the running turn was disturbed by the rejected ones")
        finally:
            reader.call.cancel()
            reader.join(30)
        after = harness.wait_turn_idle(c, s.session_id)
        self.assertEqual(after.version, s.version)

    def test_expected_version_mismatch_aborted(self):
        c = self.client
        s = self.new_session(turns=2)  # version 2
        for wrong in (0, 1, 3, 2**64 - 1):
            self.expect(consume(lambda: c.chat_call(s.session_id, tokens=[1],
                                                    expected_version=wrong,
                                                    sampling=sampling(max_tokens=2))),
                        Code.ABORTED, None, f"expected_version {wrong} at version 2")
        after = c.get_session(s.session_id)
        self.assertEqual((after.version, after.token_count), (2, s.token_count))
        t = c.turn(s.session_id, tokens=[1], expected_version=2, sampling=sampling(max_tokens=2))
        self.assertEqual(t.finished.session_version, 3, "the right expected_version runs")

    # ---------------------------------------------------------------- ALREADY_EXISTS

    def test_duplicate_request_id_already_exists(self):
        c = self.client
        s = c.create_session()
        a1, b2 = harness.rid("a-1"), harness.rid("b-2")
        c.turn(s.session_id, tokens=[5, 6], sampling=sampling(max_tokens=3), request_id=a1)
        t2 = c.turn(s.session_id, tokens=[7], sampling=sampling(max_tokens=3), request_id=b2)
        self.assertEqual(t2.finished.session_version, 2)
        before = c.get_session(s.session_id)
        for rid, tokens, version in ((a1, [5, 6], 1), (b2, [7], 2)):
            err = self.expect(consume(lambda: c.chat_call(s.session_id, tokens=tokens,
                                                          sampling=sampling(max_tokens=3),
                                                          request_id=rid)),
                              Code.ALREADY_EXISTS, re.compile(rf"\b{version}\b"),
                              f"replayed request_id {rid}")
            self.assertIn("version", err.details(), "ALREADY_EXISTS must name the version")
        # The same id with another body is a client bug, not a replay (AIP-155).
        for body in ({"tokens": [5, 7]}, {"tokens": [7], "sampling": sampling(max_tokens=4)},
                     {"tokens": None, "message": "hi"}):
            body.setdefault("sampling", sampling(max_tokens=3))
            err = self.expect(consume(lambda: c.chat_call(s.session_id, request_id=b2, **body)),
                              Code.INVALID_ARGUMENT, "different request",
                              f"request_id reused with another body {body}")
            self.assertEqual(self.bad_fields(err), [b"request_id"])
        after = c.get_session(s.session_id)
        self.assertEqual((after.version, after.token_count), (before.version, before.token_count),
                         "a duplicate request_id ran again")
        # The same request_id on another session is a different key.
        other = c.create_session()
        t = c.turn(other.session_id, tokens=[5, 6], sampling=sampling(max_tokens=3),
                   request_id=harness.rid("a-1"))
        self.assertEqual(t.finished.session_version, 1)

    # ---------------------------------------------------------------- INVALID_ARGUMENT

    def test_bad_input_invalid_argument(self):
        self.expect_chat(Code.INVALID_ARGUMENT, "no input", tokens=None)
        self.expect_chat(Code.INVALID_ARGUMENT, "empty tokens", tokens=[])
        for bad in (300, -1, 2**31 - 1, -2**31):
            self.expect_chat(Code.INVALID_ARGUMENT, f"token id {bad}", tokens=[1, bad, 2])
        self.expect_chat(Code.INVALID_ARGUMENT, "request_id of 300 bytes", request_id="r" * 300)
        for bad in ("req-1", "6f1c2d3e", "g" * 36, harness.rid("x").replace("-", "_")):
            self.expect_chat(Code.INVALID_ARGUMENT, f"request_id {bad!r} (not a UUID)",
                             request_id=bad, contains="UUID")

    def test_invalid_utf8_message_invalid_argument(self):
        c = self.client
        for raw in (b"\xff\xfe", b"abc\xc3(", b"\xed\xa0\x80", b"ok \xf4\x90\x80\x80"):
            s = self.new_session()
            req = c.chat_request(s.session_id, sampling=sampling(max_tokens=2))
            data = req.SerializeToString() + harness.encode_len_field(2, raw)  # field `message`
            self.expect(lambda: harness.collect(c.chat_raw(data)), Code.INVALID_ARGUMENT, None,
                        f"message bytes {raw!r} (not UTF-8)")
            after = harness.wait_turn_idle(c, s.session_id)
            self.assertEqual(after.version, s.version)
        # And in CreateSession's system_prompt (field 1).
        create = c.channel.unary_unary("/xlstmd.v1.ChatService/CreateSession",
                                       request_serializer=lambda b: b,
                                       response_deserializer=harness.pb().Session.FromString)
        self.expect(lambda: create(harness.encode_len_field(1, b"sys \xc0\xaf"), timeout=10),
                    Code.INVALID_ARGUMENT, None, "system_prompt not UTF-8")

    def test_bad_sampling_invalid_argument(self):
        cases = {
            "temperature NaN": dict(temperature=math.nan),
            "temperature inf": dict(temperature=math.inf),
            "temperature -1": dict(temperature=-1.0),
            "top_k -1": dict(top_k=-1),
            "top_k 301 > vocab": dict(top_k=301),
            "top_p 1.5": dict(top_p=1.5),
            "top_p -0.5": dict(top_p=-0.5),
            "min_p 1.0": dict(min_p=1.0),
            "repetition_penalty -1": dict(repetition_penalty=-1.0),
            "repetition_penalty NaN": dict(repetition_penalty=math.nan),
            "max_tokens -1": dict(max_tokens=-1),
            "empty stop string": dict(stop=[""]),
            "stop id 300": dict(stop_token_ids=[300]),
            "stop id -1": dict(stop_token_ids=[-1]),
            "logprobs -1": dict(logprobs=-1),
            "logprobs 1000": dict(logprobs=1000),
        }
        for name, params in cases.items():
            self.expect_chat(Code.INVALID_ARGUMENT, f"sampling {name}",
                             sampling=sampling(**params))

    # ---------------------------------------------------------------- RESOURCE_EXHAUSTED

    def test_limits_resource_exhausted(self):
        c = self.client
        s = self.new_session()
        # Exactly at the prompt limit is fine; one over is not: INVALID_ARGUMENT (the same
        # request never fits, so it is not load) with a BadRequest naming the field.
        t = c.turn(s.session_id, tokens=[3] * MAX_PROMPT, sampling=sampling(max_tokens=1))
        self.assertEqual(t.finished.session_version, 2)
        err = self.expect_chat(Code.INVALID_ARGUMENT, f"{MAX_PROMPT + 1} prompt tokens",
                               tokens=[3] * (MAX_PROMPT + 1))
        self.assertEqual(self.bad_fields(err), [b"tokens.ids"])
        err = self.expect_chat(Code.INVALID_ARGUMENT, "a message over max prompt tokens",
                               tokens=None, message="m" * (2 * MAX_PROMPT))
        self.assertEqual(self.bad_fields(err), [b"message"])
        # engine.h: INVALID_ARGUMENT for CreateSession; issue 4 req 7: RESOURCE_EXHAUSTED.
        try:
            c.create_session(system_prompt="s" * (2 * MAX_PROMPT))
            self.fail("a system prompt over --max-prompt-tokens was accepted")
        except grpc.RpcError as e:
            self.assertIn(e.code(), (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED),
                          f"system prompt over max prompt tokens: {e.details()}")
        self.daemon.assert_serving("system prompt over max prompt tokens")
        # max_tokens: the limit itself is accepted, one more is not.
        r = harness.StreamReader(c.chat_call(s.session_id, tokens=[1],
                                             sampling=sampling(max_tokens=LONG)))
        r.wait_first_delta()
        r.call.cancel()
        r.join(30)
        harness.wait_turn_idle(c, s.session_id)
        err = self.expect_chat(Code.INVALID_ARGUMENT, f"max_tokens {LONG + 1} over the limit",
                               sampling=sampling(max_tokens=LONG + 1))
        self.assertEqual(self.bad_fields(err), [b"sampling.max_tokens"])
        self.expect_chat(Code.INVALID_ARGUMENT, "max_tokens 2^31-1 over the limit",
                         sampling=sampling(max_tokens=2**31 - 1))
        # Messages over --max-message-bytes (enforced by gRPC itself).
        big = "x" * (MAX_MESSAGE_BYTES + 100)
        self.expect_chat(Code.RESOURCE_EXHAUSTED, "a request over max-message-bytes (message)",
                         tokens=None, message=big)
        self.expect_chat(Code.RESOURCE_EXHAUSTED, "a request over max-message-bytes (tokens)",
                         tokens=[299] * (MAX_MESSAGE_BYTES // 2))
        self.expect(lambda: c.create_session(system_prompt=big), Code.RESOURCE_EXHAUSTED, None,
                    "CreateSession over max-message-bytes")

    def bad_fields(self, err):
        """The fields a google.rpc.BadRequest in the error's details names."""
        out = []
        for bad in harness.error_details(err).get("BadRequest", []):
            for field, violation in bad:
                if field == 1:
                    out.append(dict(harness.decode_fields(violation))[1])
        return out

    def test_whitespace_and_oneof_conflicts_invalid_argument(self):
        err = self.expect_chat(Code.INVALID_ARGUMENT, "a whitespace-only message", tokens=None,
                               message=" \n\t  ", contains="whitespace")
        self.assertEqual(self.bad_fields(err), [b"message"])
        # Both members of `input` on the wire (protobuf alone would keep the last silently).
        c = self.client
        s = self.new_session()
        both = (c.chat_request(s.session_id, message="hello").SerializeToString() +
                c.chat_request(s.session_id, tokens=[5, 6]).SerializeToString())
        self.expect(consume(lambda: c.chat_raw(both)), Code.INVALID_ARGUMENT, "oneof `input`",
                    "message and tokens both set")
        self.assertEqual(c.get_session(s.session_id).version, s.version)

    def test_nan_logits_internal_and_session_untouched(self):
        """A checkpoint with a NaN weight: the turn fails INTERNAL (counted in
        xlstmd_nan_logits_total), nothing streams or commits, and the daemon keeps serving."""
        model = tempfile.mkdtemp(prefix="xlstmd-nan-model-")
        self.addCleanup(shutil.rmtree, model, True)
        src = harness.golden_dir()
        for name in os.listdir(src):
            with open(os.path.join(src, name), "rb") as f:
                data = f.read()
            if name == "model.safetensors":
                n = int.from_bytes(data[:8], "little")
                header = json.loads(data[8:8 + n])
                info = header["backbone.blocks.0.norm_mlstm.weight"]
                begin = 8 + n + info["data_offsets"][0]
                arr = bytearray(data)
                arr[begin:begin + 4] = np.array([np.nan], dtype="<f4").tobytes()
                data = bytes(arr)
            with open(os.path.join(model, name), "wb") as f:
                f.write(data)
        d = self.start_daemon(["--http-listen", "127.0.0.1:0"], name="xlstmd(nan)",
                              model_dir=model)
        c = d.client()
        sid = c.create_session().session_id
        events = []
        with self.assertRaises(grpc.RpcError) as failed:
            for event in c.chat_call(sid, tokens=[1, 2], sampling=sampling(max_tokens=3)):
                events.append(event)
        self.assertEqual(failed.exception.code(), Code.INTERNAL, failed.exception.details())
        self.assertIn("NaN", failed.exception.details())
        self.assertEqual([e for e in events if e.HasField("delta") or e.HasField("finished")],
                         [], "a turn on NaN logits streamed or finished")
        d.assert_serving("after NaN logits")
        after = harness.wait_turn_idle(c, sid)
        self.assertEqual((after.version, after.token_count), (0, 0))
        self.assertEqual(harness.metric(d.metrics(), "xlstmd_nan_logits_total"), 1)

    # ---------------------------------------------------------------- last: no slot leaked

    def test_zz_two_slots_still_run_concurrently(self):
        """Runs last (alphabetical): after all the errors above, both slots are free."""
        c = self.client
        a, b = self.new_session(), self.new_session()
        ra = harness.StreamReader(c.chat_call(a.session_id, tokens=[3],
                                              sampling=sampling(max_tokens=LONG)))
        rb = None
        try:
            ra.wait_first_delta()
            rb = harness.StreamReader(c.chat_call(b.session_id, tokens=[4],
                                                  sampling=sampling(max_tokens=LONG)))
            rb.wait_first_delta(timeout=15)
            self.assertIsNone(ra.error, harness.describe(ra.error) if ra.error else "")
            self.assertIsNone(rb.error, harness.describe(rb.error) if rb.error else "")
            self.assertFalse(ra.done.is_set() or rb.done.is_set(),
                             "both long turns must be running at once")
        finally:
            ra.call.cancel()
            if rb is not None:
                rb.call.cancel()
                rb.join(30)
            ra.join(30)
        harness.wait_turn_idle(c, a.session_id)
        harness.wait_turn_idle(c, b.session_id)
        self.daemon.assert_serving("end")


class SessionLimitTest(harness.E2ETestCase):

    def test_max_sessions_resource_exhausted(self):
        d = self.start_daemon(["--max-sessions", "3"], name="xlstmd(max-sessions)")
        c = d.client()
        ids = [c.create_session().session_id for _ in range(3)]
        c.turn(ids[0], tokens=[1, 2], sampling=sampling(max_tokens=2))
        self.assertRpcError(lambda: c.create_session(), Code.RESOURCE_EXHAUSTED, None,
                            "4th session with --max-sessions 3")
        d.assert_serving("after max-sessions")
        self.assertRpcError(lambda: c.create_session(system_prompt="hi"),
                            Code.RESOURCE_EXHAUSTED, None, "4th session (with system prompt)")
        self.assertRpcError(lambda: c.fork_session(ids[0]), Code.RESOURCE_EXHAUSTED, None,
                            "fork at --max-sessions")
        d.assert_serving("after fork at max-sessions")
        self.assertEqual(sorted(c.all_sessions()), sorted(ids), "no session was half-created")
        c.delete_session(ids[1])
        f = c.fork_session(ids[0])
        self.assertEqual(f.version, 1)
        self.assertRpcError(lambda: c.create_session(), Code.RESOURCE_EXHAUSTED, None,
                            "full again after the fork")
        c.delete_session(ids[2])
        c.create_session()
        t = c.turn(ids[0], tokens=[3], sampling=sampling(max_tokens=2))
        self.assertEqual(t.finished.session_version, 2)


    def test_env_twin(self):
        """Each flag has an XLSTMD_* environment twin (here XLSTMD_MAX_SESSIONS)."""
        d = self.start_daemon([], env={"XLSTMD_MAX_SESSIONS": "1"}, name="xlstmd(env)")
        c = d.client()
        c.create_session()
        self.assertRpcError(lambda: c.create_session(), Code.RESOURCE_EXHAUSTED, None,
                            "2nd session with XLSTMD_MAX_SESSIONS=1")
        d.assert_serving("after env max sessions")


class QueueFullTest(harness.E2ETestCase):

    def test_queue_full_resource_exhausted(self):
        d = self.start_daemon(["--http-listen", "127.0.0.1:0", "--max-batch", "1",
                               "--queue-depth", "1", "--max-tokens-limit", str(LONG)],
                              name="xlstmd(queue)")
        c = d.client()
        sessions = [c.create_session().session_id for _ in range(4)]
        readers = []
        try:
            # 1: running (it streams), 2: waits in the queue, 3 and 4: queue full.
            r1 = harness.StreamReader(c.chat_call(sessions[0], tokens=[1],
                                                  sampling=sampling(max_tokens=LONG)))
            readers.append(r1)
            r1.wait_first_delta()
            r2 = harness.StreamReader(c.chat_call(sessions[1], tokens=[2],
                                                  sampling=sampling(max_tokens=LONG)))
            readers.append(r2)
            deadline = time.monotonic() + 10
            while not c.get_session(sessions[1]).turn_running and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            self.assertIsNone(r2.error, f"the queued turn failed: "
                                        f"{harness.describe(r2.error) if r2.error else ''}")
            self.assertFalse(r2.turn.deltas, "max-batch 1, yet a second turn is decoding")
            for k in (2, 3):
                sid = sessions[k]
                err = self.assertRpcError(
                    consume(lambda: c.chat_call(sid, tokens=[3], sampling=sampling(max_tokens=2))),
                    Code.RESOURCE_EXHAUSTED, None, f"turn {k + 1} on a full queue")
                # Shedding says why and when to come back (AIP-193 details, gRFC A6 pushback).
                details = harness.error_details(err)
                self.assertEqual(details["_trailers"].get("grpc-retry-pushback-ms"), "1000",
                                 details)
                self.assertEqual(dict(details["ErrorInfo"][0])[1], b"QUEUE_FULL", details)
                self.assertIn("RetryInfo", details)
                d.assert_serving("after queue full")
                self.assertFalse(c.get_session(sid).turn_running,
                                 "a rejected turn left its session busy")
            # Cancelling the queued turn frees its queue place and its session.
            r2.call.cancel()
            r2.join(30)
            try:
                harness.wait_turn_idle(c, sessions[1], timeout=5)
            except AssertionError as e:
                self.fail(f"a turn cancelled while waiting in the queue still holds its session "
                          f"(and its queue place) while another turn runs: {e}")
            r3 = harness.StreamReader(c.chat_call(sessions[2], tokens=[3],
                                                  sampling=sampling(max_tokens=LONG)))
            readers.append(r3)
            time.sleep(0.2)
            self.assertIsNone(r3.error, "the queue place of a cancelled queued turn was not "
                              "freed: " + (harness.describe(r3.error) if r3.error else ""))
            # Cancel the running turn: the queued one gets the slot and streams.
            r1.call.cancel()
            r1.join(30)
            r3.wait_first_delta(timeout=15)
            r3.call.cancel()
            r3.join(30)
        finally:
            for r in readers:
                r.call.cancel()
                r.join(30)
        for sid in sessions:
            harness.wait_turn_idle(c, sid)
        t = c.turn(sessions[3], tokens=[5], sampling=sampling(max_tokens=3))
        self.assertEqual(t.finished.session_version, 1)
        self.assertEqual(harness.metric(d.metrics(), "xlstmd_requests_shed_total",
                                        reason="QUEUE_FULL"), 2)


    def test_deadline_while_queued_frees_session(self):
        """A turn whose deadline passes while it waits for a batch place ends with
        DEADLINE_EXCEEDED and leaves its session free (not busy until the queue moves)."""
        d = self.start_daemon(["--max-batch", "1", "--queue-depth", "4",
                               "--max-tokens-limit", str(LONG)], name="xlstmd(queue-deadline)")
        c = d.client()
        a, b = c.create_session().session_id, c.create_session().session_id
        running = harness.StreamReader(c.chat_call(a, tokens=[1],
                                                   sampling=sampling(max_tokens=LONG)))
        try:
            running.wait_first_delta()
            queued = harness.StreamReader(c.chat_call(b, tokens=[2],
                                                      sampling=sampling(max_tokens=3),
                                                      timeout=1.0))
            queued.join(30)
            self.assertIsNotNone(queued.error)
            self.assertEqual(queued.error.code(), Code.DEADLINE_EXCEEDED)
            try:
                s = harness.wait_turn_idle(c, b, timeout=5)
            except AssertionError as e:
                self.fail(f"a queued turn past its deadline still holds its session: {e}")
            self.assertEqual(s.version, 0)
            self.assertFalse(running.done.is_set(), "the running turn was disturbed")
        finally:
            running.call.cancel()
            running.join(30)
        harness.wait_turn_idle(c, a)
        t = c.turn(b, tokens=[2], sampling=sampling(max_tokens=3))
        self.assertEqual(t.finished.session_version, 1)


class ApiKeysTest(harness.E2ETestCase):

    def test_api_keys(self):
        tmp = tempfile.mkdtemp(prefix="xlstmd-e2e-keys-")
        keys = os.path.join(tmp, "keys")
        with open(keys, "w") as f:
            f.write("alice key-alice-0123456789\nbob key-bob-9876543210\n")
        os.chmod(keys, 0o600)
        self.addCleanup(lambda: (os.unlink(keys), os.rmdir(tmp)))
        d = self.start_daemon(["--api-keys-file", keys, "--keep-turn-checkpoints", "2"],
                              name="xlstmd(api-keys)")
        ch = d.channel()
        alice = harness.Client(ch, key="key-alice-0123456789")
        bob = harness.Client(ch, key="key-bob-9876543210")
        anon = harness.Client(ch)
        wrong = harness.Client(ch, key="key-alice-0123456789x")
        U = Code.UNAUTHENTICATED

        s = alice.create_session()
        t = alice.turn(s.session_id, tokens=[1, 2, 3], sampling=sampling(max_tokens=3))
        self.assertEqual(t.finished.session_version, 1)
        sid = s.session_id

        for who, cl, md in (("no key", anon, None), ("wrong key", wrong, None),
                            ("key without Bearer", anon,
                             (("authorization", "key-alice-0123456789"),)),
                            ("empty bearer", anon, (("authorization", "Bearer "),))):
            self.assertRpcError(lambda: cl.create_session(metadata=md), U, None,
                                f"CreateSession, {who}")
            self.assertRpcError(lambda: cl.get_session(sid, metadata=md), U, None,
                                f"GetSession, {who}")
            self.assertRpcError(lambda: cl.list_sessions(metadata=md), U, None,
                                f"ListSessions, {who}")
            self.assertRpcError(lambda: cl.fork_session(sid, metadata=md), U, None,
                                f"ForkSession, {who}")
            self.assertRpcError(lambda: cl.delete_session(sid, metadata=md), U, None,
                                f"DeleteSession, {who}")
            self.assertRpcError(consume(lambda: cl.chat_call(sid, tokens=[1], metadata=md)), U,
                                None, f"Chat, {who}")
            d.assert_serving(f"after {who}")

        # Another tenant's session looks exactly like a nonexistent one.
        gone = alice.create_session().session_id
        alice.delete_session(gone)
        foreign = self.assertRpcError(lambda: bob.get_session(sid), Code.NOT_FOUND, None,
                                      "bob GetSession(alice's)")
        missing = self.assertRpcError(lambda: bob.get_session(gone), Code.NOT_FOUND, None,
                                      "bob GetSession(deleted)")
        self.assertEqual(foreign.details().replace(sid, "<id>"),
                         missing.details().replace(gone, "<id>"),
                         "a foreign session's error must not differ from a missing one's")
        self.assertRpcError(consume(lambda: bob.chat_call(sid, tokens=[1])), Code.NOT_FOUND,
                            None, "bob Chat(alice's)")
        self.assertRpcError(lambda: bob.fork_session(sid), Code.NOT_FOUND, None,
                            "bob ForkSession(alice's)")
        self.assertRpcError(lambda: bob.delete_session(sid), Code.NOT_FOUND, None,
                            "bob DeleteSession(alice's)")
        self.assertRpcError(lambda: bob.fork_session(sid, version=0), Code.NOT_FOUND, None,
                            "bob ForkSession(alice's, version 0)")
        self.assertRpcError(lambda: bob.rewind_session(sid, 0), Code.NOT_FOUND, None,
                            "bob RewindSession(alice's)")
        self.assertRpcError(lambda: bob.export_session(sid), Code.NOT_FOUND, None,
                            "bob ExportSession(alice's)")
        self.assertNotIn(sid, bob.all_sessions(), "bob lists alice's session")
        self.assertIn(sid, alice.all_sessions())
        b = bob.create_session()
        self.assertNotIn(b.session_id, alice.all_sessions(), "alice lists bob's session")
        self.assertRpcError(lambda: alice.get_session(b.session_id), Code.NOT_FOUND, None,
                            "alice GetSession(bob's)")

        # Alice's session is untouched by all of that.
        after = alice.get_session(sid)
        self.assertEqual((after.version, after.token_count), (1, 6))
        t = alice.turn(sid, tokens=[4], sampling=sampling(max_tokens=2))
        self.assertEqual(t.finished.session_version, 2)
        self.assertGreater(alice.model_info().vocab_size, 0)
        d.assert_serving("end (health needs no key)")


if __name__ == "__main__":
    harness.main()
