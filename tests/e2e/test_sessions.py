#!/usr/bin/python3
"""E2E (d, session API): ForkSession, DeleteSession, ListSessions paging, GetModelInfo,
session metadata, --default-max-tokens, --idle-ttl, grpc.health.v1 and server reflection.
"""

import json
import os
import time

import grpc

import harness
from harness import sampling

Code = grpc.StatusCode
DEFAULT_MAX_TOKENS = 7


class SessionsTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.daemon = harness.Daemon(["--default-max-tokens", str(DEFAULT_MAX_TOKENS)],
                                    name="xlstmd(sessions)").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def test_fork_then_both_continue_identically(self):
        c = self.client
        s = c.create_session()
        t1 = c.turn(s.session_id, tokens=[100, 101, 102], sampling=sampling(max_tokens=6))
        t2 = c.turn(s.session_id, tokens=[7, 8], sampling=sampling(max_tokens=6))
        orig = c.get_session(s.session_id)
        f = c.fork_session(s.session_id)
        self.assertNotEqual(f.session_id, s.session_id)
        self.assertEqual((f.version, f.token_count), (orig.version, orig.token_count),
                         "a fork starts at the source's committed version and token count")
        history = [100, 101, 102] + t1.ids + [7, 8] + t2.ids
        for params in (dict(max_tokens=10), dict(max_tokens=10, temperature=0.8, seed=31337)):
            a = c.turn(s.session_id, tokens=[9, 10, 11], sampling=sampling(**params))
            b = c.turn(f.session_id, tokens=[9, 10, 11], sampling=sampling(**params))
            self.assertEqual(a.ids, b.ids, f"source and fork diverged ({params})")
            self.assertEqual(a.finished.session_version, b.finished.session_version)
            if "temperature" not in params:
                self.assertEqual(a.ids, self.daemon.reference(history + [9, 10, 11], 10),
                                 "fork continuation vs xlstm generate")
            history += [9, 10, 11] + a.ids
        # The two are independent: a turn on one leaves the other alone.
        c.turn(f.session_id, tokens=[1], sampling=sampling(max_tokens=2))
        self.assertEqual(c.get_session(s.session_id).version, 4)
        self.assertEqual(c.get_session(f.session_id).version, 5)
        # Fork of a fresh session (version 0, nothing consumed) and of a system-prompt session.
        z = c.fork_session(c.create_session().session_id)
        self.assertEqual((z.version, z.token_count), (0, 0))
        sp = c.create_session(system_prompt="Be brief.")
        fz = c.fork_session(sp.session_id)
        self.assertEqual(fz.token_count, sp.token_count)
        x = c.turn(sp.session_id, tokens=[50, 51], sampling=sampling(max_tokens=5))
        y = c.turn(fz.session_id, tokens=[50, 51], sampling=sampling(max_tokens=5))
        self.assertEqual(x.ids, y.ids, "fork of a system-prompt session diverged")
        self.daemon.assert_serving("after forks")

    def test_delete_then_not_found(self):
        c = self.client
        s = c.create_session()
        c.turn(s.session_id, tokens=[1, 2], sampling=sampling(max_tokens=2))
        f = c.fork_session(s.session_id)
        c.delete_session(s.session_id)
        self.assertRpcError(lambda: c.get_session(s.session_id), Code.NOT_FOUND, None,
                            "GetSession after delete")
        self.assertRpcError(lambda: harness.collect(c.chat_call(s.session_id, tokens=[1])),
                            Code.NOT_FOUND, None, "Chat after delete")
        self.assertRpcError(lambda: c.delete_session(s.session_id), Code.NOT_FOUND, None,
                            "second delete")
        self.assertRpcError(lambda: c.fork_session(s.session_id), Code.NOT_FOUND, None,
                            "fork after delete")
        self.assertNotIn(s.session_id, c.all_sessions())
        # The fork survives its source.
        t = c.turn(f.session_id, tokens=[3], sampling=sampling(max_tokens=2))
        self.assertEqual(t.finished.session_version, 2)
        self.daemon.assert_serving("after deletes")

    def test_list_sessions_pagination(self):
        d = self.start_daemon([], name="xlstmd(list)")  # a daemon with only our sessions
        c = d.client()
        self.assertEqual(c.all_sessions(), [])
        created = [c.create_session() for _ in range(7)]
        c.turn(created[0].session_id, tokens=[1], sampling=sampling(max_tokens=2))
        want = sorted(s.session_id for s in created)
        for page_size in (1, 2, 3, 7, 50, 0):
            pages, token, seen = [], "", []
            while True:
                resp = c.list_sessions(page_size=page_size, page_token=token)
                pages.append(len(resp.sessions))
                seen.extend(resp.sessions)
                if page_size:
                    self.assertLessEqual(len(resp.sessions), page_size, f"page_size {page_size}")
                if not resp.next_page_token:
                    break
                token = resp.next_page_token
                self.assertLess(len(pages), 20, "ListSessions does not end")
            ids = [s.session_id for s in seen]
            self.assertEqual(len(ids), len(set(ids)), f"page_size {page_size}: duplicates {pages}")
            self.assertEqual(sorted(ids), want, f"page_size {page_size}: pages {pages}")
            if page_size:
                nonempty = [n for n in pages if n]
                self.assertEqual(len(nonempty), -(-7 // page_size),
                                 f"page_size {page_size}: pages {pages}")
                self.assertTrue(all(n == page_size for n in nonempty[:-1]),
                                f"page_size {page_size}: short pages before the end: {pages}")
            by_id = {s.session_id: s for s in seen}
            self.assertEqual(by_id[created[0].session_id].version, 1)
            self.assertEqual(by_id[created[1].session_id].version, 0)
        self.assertRpcError(lambda: c.list_sessions(page_size=-1), Code.INVALID_ARGUMENT, None,
                            "negative page_size")
        d.assert_serving("after page_size -1")
        try:
            c.list_sessions(page_size=2, page_token="not-a-token\u00ff")
        except grpc.RpcError as e:
            self.assertEqual(e.code(), Code.INVALID_ARGUMENT, f"garbage page_token: {e.details()}")
        d.assert_serving("after a garbage page_token")
        # Deleting a session between pages does not break paging.
        first = c.list_sessions(page_size=3)
        c.delete_session(first.sessions[0].session_id)
        rest = []
        token = first.next_page_token
        while token:
            resp = c.list_sessions(page_size=3, page_token=token)
            rest.extend(s.session_id for s in resp.sessions)
            token = resp.next_page_token
        got = [s.session_id for s in first.sessions] + rest
        self.assertEqual(sorted(got), want, "paging after a delete lost or repeated sessions")

    def test_model_info(self):
        info = self.client.model_info()
        with open(os.path.join(harness.golden_dir(), "config.json")) as f:
            cfg = json.load(f)
        e, nh = cfg["embedding_dim"], cfg["num_heads"]
        dqk, dv = int(e * cfg["qk_dim_factor"]) // nh, int(e * cfg["v_dim_factor"]) // nh
        self.assertEqual(info.model, harness.GOLDEN_MODEL)
        self.assertTrue(info.family.startswith("xlstm"), info.family)
        self.assertEqual(info.vocab_size, cfg["vocab_size"])
        self.assertEqual(info.embedding_dim, e)
        self.assertEqual(info.num_blocks, cfg["num_blocks"])
        self.assertEqual(info.num_heads, nh)
        self.assertEqual(info.qk_head_dim, dqk)
        self.assertEqual(info.v_head_dim, dv)
        # Per block: C [NH, DQK, DV], n [NH, DQK], m [NH] in float32 at least.
        minimum = cfg["num_blocks"] * nh * (dqk * dv + dqk + 1) * 4
        self.assertGreaterEqual(info.state_bytes_per_session, minimum)
        self.assertLess(info.state_bytes_per_session, 64 * minimum)
        self.assertEqual(info.backend, "cpu")
        self.assertTrue(info.isa, "isa is empty")
        self.assertTrue(info.weight_dtype, "weight_dtype is empty")
        self.assertTrue(info.weights_digest, "weights_digest is empty")

    def test_session_timestamps(self):
        c = self.client
        now_ms = time.time() * 1000
        s = c.create_session()
        self.assertLess(abs(s.created_unix_ms - now_ms), 60_000, "created_unix_ms is wall time")
        time.sleep(0.01)
        c.turn(s.session_id, tokens=[1], sampling=sampling(max_tokens=2))
        got = c.get_session(s.session_id)
        self.assertEqual(got.created_unix_ms, s.created_unix_ms)
        self.assertGreaterEqual(got.updated_unix_ms, got.created_unix_ms)
        self.assertLess(abs(got.updated_unix_ms - time.time() * 1000), 60_000)

    def test_default_max_tokens(self):
        """max_tokens 0 means the server's --default-max-tokens."""
        c = self.client
        s = c.create_session()
        t = c.turn(s.session_id, tokens=[1, 2, 3])
        self.assertEqual(len(t.ids), DEFAULT_MAX_TOKENS)
        self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_MAX_TOKENS)

    def test_idle_ttl(self):
        """--idle-ttl deletes idle sessions, never one with a turn running."""
        d = self.start_daemon(["--idle-ttl", "1s", "--max-tokens-limit", "1000000"],
                              name="xlstmd(ttl)")
        c = d.client()
        idle = c.create_session().session_id
        busy = c.create_session().session_id
        reader = harness.StreamReader(c.chat_call(busy, tokens=[1],
                                                  sampling=sampling(max_tokens=1_000_000)))
        try:
            reader.wait_first_delta()
            deadline = time.monotonic() + 6
            while True:
                try:
                    c.get_session(idle)
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), Code.NOT_FOUND, e.details())
                    break
                self.assertLess(time.monotonic(), deadline,
                                "an idle session outlived --idle-ttl 1s by 5s")
                time.sleep(0.1)
            time.sleep(1.5)  # the busy session has been running for well over the TTL now
            self.assertTrue(c.get_session(busy).turn_running, "a running session was expired")
            self.assertIsNone(reader.error, harness.describe(reader.error) if reader.error else "")
        finally:
            reader.call.cancel()
            reader.join(30)
        s = harness.wait_turn_idle(c, busy)
        self.assertEqual(s.version, 0)
        d.assert_serving("after TTL expiry")

    def test_reflection_lists_services(self):
        """Server reflection (v1alpha) lists the chat, model and health services."""
        method = self.client.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        # ServerReflectionRequest { list_services = 7 (string) }
        responses = list(method(iter([harness.encode_len_field(7, b"*")]), timeout=10))
        self.assertEqual(len(responses), 1)
        names = []
        for field, value in harness.decode_fields(responses[0]):
            if field == 6:  # list_services_response
                for f2, service in harness.decode_fields(value):
                    if f2 == 1:  # ServiceResponse
                        names += [v.decode() for f3, v in harness.decode_fields(service)
                                  if f3 == 1]
        for want in ("xlstmd.v1.ChatService", "xlstmd.v1.ModelService", "grpc.health.v1.Health"):
            self.assertIn(want, names, f"reflection lists {names}")

    def test_startup_line_and_health(self):
        log = self.daemon.log()
        line = next(l for l in log.splitlines() if "listen=" in l)
        for word in ("xlstm-large-a1", "cpu"):
            self.assertIn(word, line, "the startup line names model and backend")
        self.assertEqual(self.daemon.health(""), harness.HEALTH_SERVING)
        self.assertRpcError(lambda: self.daemon.health("no.such.Service"), Code.NOT_FOUND, None,
                            "health of an unknown service")
        self.assertRpcError(lambda: self.client.channel.unary_unary(
            "/xlstmd.v1.ChatService/NoSuchMethod")(b"", timeout=5), Code.UNIMPLEMENTED, None,
            "unknown method")
        self.daemon.assert_serving("after an unknown method")


if __name__ == "__main__":
    harness.main()
