#!/usr/bin/python3
"""The web port (--web-listen): the OpenAI-compatible chat completions and Responses API, the
session API over SSE and the chat page, spoken to by a raw HTTP client that checks every byte
of framing (web_client.py), next to the gRPC client for comparisons.
"""

import json
import os
import signal
import tempfile
import threading
import time

import grpc

import harness
import web_client as web
from harness import sampling

LONG = 1_000_000  # max_tokens of a turn that cannot finish during the test
PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]


def chat_body(content="Hello", **kw):
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 6}
    body.update(kw)
    return body


def data_events(stream):
    """The JSON of each `data:` of a chat-completions stream, [DONE] checked last."""
    events = stream.collect()
    datas = [d for (_, d) in events]
    if not datas or datas[-1] != "[DONE]":
        raise AssertionError(f"the stream does not end with [DONE]: {datas[-3:]}")
    if "[DONE]" in datas[:-1]:
        raise AssertionError("[DONE] before the end")
    return [json.loads(d) for d in datas[:-1]]


class WebTest(harness.E2ETestCase):

    @classmethod
    def setUpClass(cls):
        cls.daemon = harness.Daemon(
            ["--web-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--max-tokens-limit", str(LONG), "--slots", "4", "--max-batch", "2",
             "--keep-turn-checkpoints", "4", "--web-heartbeat", "1s"],
            name="xlstmd(web)").start()
        cls.addr = cls.daemon.web_address
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def post(self, path, body, **kw):
        return web.request(self.addr, "POST", path, body, **kw)

    def get(self, path, **kw):
        return web.request(self.addr, "GET", path, **kw)

    def new_session(self):
        r = self.post("/v1/sessions", {})
        self.assertEqual(r.status, 201, r)
        return r.json()["session_id"]

    def session(self, sid):
        r = self.get(f"/v1/sessions/{sid}")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_idle(self, sid, timeout=2.0):
        deadline = time.monotonic() + timeout
        while True:
            s = self.session(sid)
            if not s["turn_running"] or time.monotonic() > deadline:
                return s
            time.sleep(0.02)

    # ---- the listener, the page, the models ----

    def test_models_and_the_page(self):
        self.assertIsNotNone(self.addr, "no web= in the serving line")
        self.assertNotEqual(self.addr, self.daemon.http_address)
        models = self.get("/v1/models").json()
        self.assertEqual(models["object"], "list")
        self.assertEqual(len(models["data"]), 1)
        name = models["data"][0]["id"]
        self.assertEqual(self.get(f"/v1/models/{name}").json()["id"], name)
        page = self.get("/")
        self.assertEqual(page.status, 200)
        self.assertTrue(page.headers["content-type"].startswith("text/html"))
        self.assertIn("default-src 'self'", page.headers["content-security-policy"])
        self.assertEqual(page.headers["x-content-type-options"], "nosniff")
        total = len(page.body)
        for asset in ("/app.js", "/style.css"):
            r = self.get(asset)
            self.assertEqual(r.status, 200, asset)
            total += len(r.body)
            self.assertNotIn(b"http://", r.body, f"{asset} names an external URL")
            self.assertNotIn(b"https://", r.body, f"{asset} names an external URL")
        self.assertLess(total, 30 * 1024)
        self.assertNotIn(b".innerHTML", self.get("/app.js").body)
        self.assertEqual(self.get("/nope").status, 404)
        # The ops port knows nothing of the API.
        self.assertEqual(web.request(self.daemon.http_address, "GET", "/v1/models").status, 404)

    # ---- chat completions ----

    def test_streamed_chat_completion_has_the_common_shape(self):
        s = web.SseStream(self.addr, "POST", "/v1/chat/completions",
                          chat_body(stream=True, stream_options={"include_usage": True}))
        self.assertEqual(s.status, 200)
        self.assertEqual(s.headers["transfer-encoding"], "chunked")
        chunks = data_events(s)
        ids = {c["id"] for c in chunks}
        self.assertEqual(len(ids), 1)
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        usage_chunk = chunks[-1]
        self.assertEqual(usage_chunk["choices"], [])
        finish = chunks[-2]["choices"][0]
        self.assertEqual(finish["finish_reason"], "length")
        self.assertEqual(finish["delta"], {})
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2])
        usage = usage_chunk["usage"]
        self.assertEqual(usage["completion_tokens"], 6)
        self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + 6)
        self.assertEqual(usage["prompt_tokens_details"]["cached_tokens"], 0)
        # The same request, not streamed: the same reply and counts, and its temporary
        # session is gone by the time the reply has arrived.
        before = len(self.get("/v1/sessions?page_size=1000").json()["sessions"])
        whole = self.post("/v1/chat/completions", chat_body())
        self.assertEqual(len(self.get("/v1/sessions?page_size=1000").json()["sessions"]), before)
        self.assertEqual(whole.status, 200, whole)
        j = whole.json()
        self.assertEqual(j["object"], "chat.completion")
        self.assertEqual(j["choices"][0]["message"], {"role": "assistant", "content": text})
        self.assertEqual(j["usage"], usage)
        # A stateless request leaves no session behind.
        self.assertNotIn("xlstmd", j)

    def test_stateless_equals_a_session_fed_the_same_turns(self):
        # The gRPC client runs the conversation as a session; its first reply is then sent
        # back as history. Greedy replies agree wherever the reply's ids round-trip.
        c = self.client
        sid = c.create_session().session_id
        t1 = c.turn(sid, message="Hi there", sampling=sampling(max_tokens=5))
        t2 = c.turn(sid, message="And then?", sampling=sampling(max_tokens=5))
        body = chat_body(max_tokens=5)
        body["messages"] = [{"role": "user", "content": "Hi there"},
                            {"role": "assistant", "content": t1.text},
                            {"role": "user", "content": "And then?"}]
        r = self.post("/v1/chat/completions", body).json()
        # The session holds t1's ids; the stateless encoding re-encodes t1's text and adds
        # the template's stop id (a reply normally ends on it; this one hit max_tokens, so the
        # stateless prompt is one id longer than the session's history).
        stop = 1 if t1.finished.finish_reason != 1 else 0
        round_trips = all(i < 256 for i in t1.ids) and bytes(t1.ids) == t1.text.encode("utf-8")
        if round_trips:
            self.assertEqual(r["usage"]["prompt_tokens"],
                             len(t1.input_ids) + len(t1.ids) + stop + len(t2.input_ids))
            if not stop:
                self.assertEqual(r["choices"][0]["message"]["content"], t2.text)
        # Stateless with one message == a new session's first turn.
        one = self.post("/v1/chat/completions", chat_body("Hi there", max_tokens=5)).json()
        self.assertEqual(one["choices"][0]["message"]["content"], t1.text)
        self.assertEqual(one["usage"]["prompt_tokens"], len(t1.input_ids))

    def test_stateful_chat_completions_send_only_the_new_message(self):
        sid = self.new_session()
        body = chat_body("First", xlstmd={"session_id": sid})
        r1 = self.post("/v1/chat/completions", body).json()
        self.assertEqual(r1["xlstmd"], {"session_id": sid, "session_version": 1})
        self.assertEqual(r1["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        count = self.session(sid)["token_count"]
        # The header names the session as well as the body field.
        r2 = web.request(self.addr, "POST", "/v1/chat/completions", chat_body("Second"),
                         headers={"X-Session-Id": sid})
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.headers["x-session-version"], "2")
        u = r2.json()["usage"]
        self.assertEqual(u["prompt_tokens_details"]["cached_tokens"], int(count))
        # A header naming another session than the body (or the path) is the client's bug:
        # a ring-hash proxy would route the turn by the wrong session (docs/deploy.md).
        other = self.new_session()
        r = web.request(self.addr, "POST", "/v1/chat/completions",
                        chat_body("x", xlstmd={"session_id": sid}), headers={"X-Session-Id": other})
        self.assertEqual(r.status, 400, r)
        self.assertIn("X-Session-Id", r.json()["error"]["message"])
        r = web.request(self.addr, "GET", f"/v1/sessions/{sid}", headers={"X-Session-Id": other})
        self.assertEqual(r.status, 400, r)
        ok = web.request(self.addr, "GET", f"/v1/sessions/{sid}", headers={"X-Session-Id": sid})
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(int(self.session(sid)["version"]), 2)
        # History in a stateful request is refused: the server holds it.
        bad = chat_body(xlstmd={"session_id": sid})
        bad["messages"].insert(0, {"role": "user", "content": "again"})
        r = self.post("/v1/chat/completions", bad)
        self.assertEqual(r.status, 400)
        self.assertIn("the server holds the history", r.json()["error"]["message"])
        # A stale expected_version is a conflict, not retried.
        r = self.post("/v1/chat/completions",
                      chat_body(xlstmd={"session_id": sid, "expected_version": 1}))
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.headers["x-should-retry"], "false")

    # ---- the session API ----

    def test_resume_equals_replay_over_the_session_api(self):
        sid = self.new_session()
        history = []
        inputs = [PROMPT, [44, 45, 46], [250, 251]]
        last = None
        for k, ids in enumerate(inputs):
            s = web.SseStream(self.addr, "POST", f"/v1/sessions/{sid}/turns",
                              {"tokens": {"ids": ids}, "sampling": {"max_tokens": 6}})
            self.assertEqual(s.status, 200)
            events = s.collect()
            names = [n for (n, _) in events]
            self.assertEqual(names[0], "started")
            self.assertEqual(names[-1], "finished")
            self.assertEqual(set(names[1:-1]), {"delta"})
            started = json.loads(events[0][1])
            self.assertEqual(started["input_token_ids"], ids, "only the new ids are read")
            reply = [i for (_, d) in events[1:-1] for i in json.loads(d)["token_ids"]]
            finished = json.loads(events[-1][1])
            self.assertEqual(int(finished["session_version"]), k + 1)
            history += ids
            last = reply
            if k < len(inputs) - 1:
                history += reply
        self.assertEqual(last, self.daemon.reference(history, 6))

    def test_session_commands(self):
        sid = self.new_session()
        web.SseStream(self.addr, "POST", f"/v1/sessions/{sid}/turns",
                      {"tokens": {"ids": PROMPT}, "sampling": {"max_tokens": 3}}).collect()
        fork = self.post(f"/v1/sessions/{sid}/fork", None)
        self.assertEqual(fork.status, 201, fork)
        self.assertEqual(fork.json()["version"], "1")
        rew = self.post(f"/v1/sessions/{sid}/rewind", {"version": 0})
        self.assertEqual(rew.status, 200, rew)
        self.assertEqual(rew.json()["version"], "0")
        listed = [s["session_id"] for s in self.get("/v1/sessions?page_size=1000").json()["sessions"]]
        self.assertIn(sid, listed)
        self.assertEqual(web.request(self.addr, "DELETE", f"/v1/sessions/{sid}").status, 200)
        self.assertEqual(self.get(f"/v1/sessions/{sid}").status, 404)

    # ---- the Responses API ----

    def test_responses_chain_by_previous_response_id(self):
        r1 = self.post("/v1/responses", {"input": "Hello", "max_output_tokens": 4,
                                         "temperature": 0, "instructions": "Be brief."}).json()
        self.assertEqual(r1["object"], "response")
        self.assertEqual(r1["status"], "incomplete")
        r2 = self.post("/v1/responses", {"input": "More", "previous_response_id": r1["id"],
                                         "max_output_tokens": 4, "temperature": 0}).json()
        r3 = self.post("/v1/responses", {"input": [{"role": "user", "content": "Again"}],
                                         "previous_response_id": r2["id"],
                                         "max_output_tokens": 4, "temperature": 0}).json()
        cached = [r["usage"]["input_tokens_details"]["cached_tokens"] for r in (r1, r2, r3)]
        self.assertEqual(cached[0], 0)
        self.assertLess(cached[0], cached[1])
        self.assertLess(cached[1], cached[2])
        self.assertEqual(r3["previous_response_id"], r2["id"])
        # The same conversation over gRPC gives the same third reply.
        c = self.client
        sid = c.create_session(system_prompt="Be brief.").session_id
        for msg in ("Hello", "More"):
            c.turn(sid, message=msg, sampling=sampling(max_tokens=4))
        t3 = c.turn(sid, message="Again", sampling=sampling(max_tokens=4))
        self.assertEqual(r3["output"][0]["content"][0]["text"], t3.text)
        # Stored, fetched, deleted.
        self.assertEqual(self.get(f"/v1/responses/{r3['id']}").json()["id"], r3["id"])
        self.assertEqual(web.request(self.addr, "DELETE", f"/v1/responses/{r3['id']}").status, 200)
        self.assertEqual(self.get(f"/v1/responses/{r3['id']}").status, 404)
        # An older response of a conversation that moved on branches off it (the version is
        # kept by --keep-turn-checkpoints): the same input gives the same reply as the first
        # time, in a new conversation, and the original goes on where it was.
        again = self.post("/v1/responses", {"input": "More", "previous_response_id": r1["id"],
                                            "max_output_tokens": 4, "temperature": 0}).json()
        self.assertEqual(again["output"][0]["content"][0]["text"],
                         r2["output"][0]["content"][0]["text"])
        self.assertNotEqual(again["xlstmd"]["session_id"], r2["xlstmd"]["session_id"])
        self.assertEqual(again["xlstmd"]["session_version"], 2)
        self.assertEqual(self.session(r3["xlstmd"]["session_id"])["version"], "3")

    def test_responses_store_false_leaves_no_session(self):
        before = len(self.get("/v1/sessions?page_size=1000").json()["sessions"])
        r = self.post("/v1/responses", {"input": "Hi", "store": False, "max_output_tokens": 2})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.get("/v1/sessions?page_size=1000").json()["sessions"]), before)
        self.assertEqual(self.get(f"/v1/responses/{r.json()['id']}").status, 404)

    def test_responses_stream_events_in_order(self):
        s = web.SseStream(self.addr, "POST", "/v1/responses",
                          {"input": "Hi", "stream": True, "max_output_tokens": 3})
        events = s.collect()
        names = [n for (n, _) in events]
        self.assertEqual(names[:4], ["response.created", "response.in_progress",
                                     "response.output_item.added",
                                     "response.content_part.added"])
        self.assertEqual(names[-4:], ["response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.incomplete"])
        self.assertEqual(set(names[4:-4]), {"response.output_text.delta"})
        datas = [json.loads(d) for (_, d) in events]
        self.assertEqual([d["sequence_number"] for d in datas], list(range(len(datas))))
        self.assertEqual([d["type"] for d in datas], names)
        deltas = "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta")
        self.assertEqual(datas[-4]["text"], deltas)
        self.assertNotIn("[DONE]", [d for (_, d) in events])

    def test_logprobs_and_the_extra_sampling_fields(self):
        r = self.post("/v1/chat/completions",
                      chat_body(logprobs=True, top_logprobs=2, top_k=5, min_p=0.0,
                                repetition_penalty=1.1, stop_token_ids=[0])).json()
        content = r["choices"][0]["logprobs"]["content"]
        self.assertEqual(len(content), r["usage"]["completion_tokens"])
        for e in content:
            self.assertLessEqual(e["logprob"], 0.0)
            self.assertEqual(len(e["top_logprobs"]), 2)
            self.assertGreaterEqual(e["top_logprobs"][0]["logprob"], e["top_logprobs"][1]["logprob"])
        self.assertEqual(bytes(b for e in content for b in e["bytes"]).decode("utf-8", "replace"),
                         r["choices"][0]["message"]["content"])
        r = self.post("/v1/chat/completions", chat_body(top_logprobs=2))
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["param"], "top_logprobs")

    # ---- errors: one table, the same messages as gRPC ----

    def test_bad_inputs(self):
        cases = [
            (b"{not json", 400, None),
            ({"messages": []}, 400, "messages"),
            ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "messages"),
            (chat_body(n=2), 400, "n"),
            (chat_body(tools=[{"type": "function"}]), 400, "tools"),
            (chat_body(response_format={"type": "json_object"}), 400, "response_format"),
            (chat_body(frobnicate=1), 400, "frobnicate"),
            (chat_body(temperature="hot"), 400, "temperature"),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
             "messages[0].content[0]"),
            (b'{"messages": [{"role": "user", "content": "\xff"}]}', 400, None),
            ({"messages": [{"role": "user", "content": " \n\t "}]}, 400, "messages[0].content"),
        ]
        for body, status, param in cases:
            r = self.post("/v1/chat/completions", body)
            self.assertEqual(r.status, status, f"{body!r}: {r}")
            err = r.json()["error"]
            self.assertEqual(err["param"], param, body)
            self.assertEqual(err["type"], "invalid_request_error", body)
        # A blank stored response is refused before its session exists (none is left behind).
        before = len(self.client.all_sessions())
        r = self.post("/v1/responses", {"input": "   "})
        self.assertEqual((r.status, r.json()["error"]["param"]), (400, "input"), r)
        self.assertEqual(len(self.client.all_sessions()), before)
        # Deeply nested JSON (a stack-depth attack) is one more 400, on every JSON endpoint.
        deep = b'{"messages":' + b"[" * 500000 + b"]" * 500000 + b"}"
        for path in ("/v1/chat/completions", "/v1/responses", "/v1/sessions"):
            self.assertEqual(self.post(path, deep).status, 400, path)
        r = self.post("/v1/chat/completions", b"{}", content_type="text/plain")
        self.assertEqual(r.status, 415, r)
        r = self.get("/v1/chat/completions")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["allow"], "POST")
        r = web.request(self.addr, "PUT", "/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA/fork", {})
        self.assertEqual((r.status, r.headers["allow"]), (405, "POST"))
        # The same refusals as gRPC, with the same messages.
        unknown = "AAAAAAAAAAAAAAAAAAAAAA"
        g = self.assertRpcError(lambda: self.client.turn(unknown, tokens=[1]),
                                grpc.StatusCode.NOT_FOUND)
        r = self.post("/v1/chat/completions", chat_body(xlstmd={"session_id": unknown}))
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["message"], g.details())
        self.assertEqual(r.json()["error"]["code"], "not_found")
        sid = self.new_session()
        g = self.assertRpcError(
            lambda: self.client.turn(sid, tokens=[1], sampling=sampling(max_tokens=LONG + 1)),
            grpc.StatusCode.INVALID_ARGUMENT)
        r = self.post("/v1/chat/completions",
                      chat_body(max_tokens=LONG + 1, xlstmd={"session_id": sid}))
        self.assertEqual(r.status, 400, "a request over a limit is not a retryable 429")
        self.assertEqual(r.json()["error"]["message"], g.details())
        # A turn on a busy session: ABORTED on both, 409 with the same message.
        busy = web.SseStream(self.addr, "POST", f"/v1/sessions/{sid}/turns",
                             {"tokens": {"ids": [7]}, "sampling": {"max_tokens": LONG}})
        next(iter(busy))
        g = self.assertRpcError(lambda: self.client.turn(sid, tokens=[1]), grpc.StatusCode.ABORTED)
        r = self.post("/v1/chat/completions", chat_body(xlstmd={"session_id": sid}))
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json()["error"]["message"], g.details())
        busy.close()
        self.wait_idle(sid)

    # ---- disconnects ----

    def check_untouched(self, sid, history, token_count, context):
        s = self.wait_idle(sid)
        self.assertFalse(s["turn_running"], f"{context}: still running 2 s after the client left")
        self.assertEqual(s["version"], "1", context)
        self.assertEqual(s["token_count"], token_count, context)
        t = self.client.turn(sid, tokens=[44, 45], sampling=sampling(max_tokens=4))
        self.assertEqual(t.finished.session_version, 2, context)
        self.assertEqual(t.ids, self.daemon.reference(history + [44, 45], 4),
                         f"{context}: the next turn == a fresh replay of the kept history")

    def test_disconnect_mid_stream_and_while_queued_roll_back(self):
        # Two long turns fill --max-batch 2; a third waits in the queue.
        holders = []
        sids, histories, counts = [], [], []
        for _ in range(3):
            sid = self.new_session()
            events = web.SseStream(self.addr, "POST", f"/v1/sessions/{sid}/turns",
                                   {"tokens": {"ids": PROMPT},
                                    "sampling": {"max_tokens": 3}}).collect()
            reply = [i for (n, d) in events if n == "delta" for i in json.loads(d)["token_ids"]]
            sids.append(sid)
            histories.append(PROMPT + reply)
            counts.append(self.session(sid)["token_count"])
        for sid in sids[:2]:
            s = web.SseStream(self.addr, "POST", f"/v1/sessions/{sid}/turns",
                              {"tokens": {"ids": [7]}, "sampling": {"max_tokens": LONG}})
            it = iter(s)
            self.assertEqual(next(it)[0], "started")
            self.assertEqual(next(it)[0], "delta")
            holders.append(s)
        queued = web.SseStream(self.addr, "POST", f"/v1/sessions/{sids[2]}/turns",
                               {"tokens": {"ids": [7]}, "sampling": {"max_tokens": LONG}})
        # Queued: no event, but heartbeats keep the stream alive (and find a departed client).
        self.assertEqual(queued.status, 200)
        self.assertEqual(queued.next_comment(), ": ping")
        self.assertEqual(queued.events, [])
        queued.close()
        holders[0].close()
        for k, context in ((0, "mid-stream"), (2, "queued")):
            self.check_untouched(sids[k], histories[k], counts[k], context)
        holders[1].close()
        self.check_untouched(sids[1], histories[1], counts[1], "second mid-stream")


class WebLimitsTest(harness.E2ETestCase):
    """Daemons of their own: a stream cap, API keys, CORS, and a drain."""

    def web_daemon(self, *extra, name="xlstmd(web)"):
        return self.start_daemon(["--web-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                  "--max-tokens-limit", str(LONG), *extra], name=name)

    def long_stream(self, d, headers=None):
        s = web.SseStream(d.web_address, "POST", "/v1/chat/completions",
                          chat_body(stream=True, max_tokens=LONG), headers=headers)
        self.assertEqual(s.status, 200)
        it = iter(s)
        next(it)  # the role chunk
        next(it)  # a first token
        return s, it

    def test_the_stream_cap_is_429_at_once_and_scrapes_stay_fast(self):
        d = self.web_daemon("--web-max-streams", "1")
        held, _ = self.long_stream(d)
        t0 = time.monotonic()
        r = web.request(d.web_address, "POST", "/v1/chat/completions",
                        chat_body(stream=True, max_tokens=LONG))
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.headers["retry-after"], "1")
        self.assertEqual(r.json()["error"]["type"], "rate_limit_error")
        self.assertLess(time.monotonic() - t0, 2.0)
        t0 = time.monotonic()
        m = web.request(d.http_address, "GET", "/metrics")
        self.assertEqual(m.status, 200)
        self.assertLess(time.monotonic() - t0, 1.0, "/metrics waited behind a chat stream")
        samples = harness.parse_metrics(m.body.decode())
        self.assertEqual(harness.metric(samples, "xlstmd_web_open_streams"), 1)
        held.close()

    def test_api_keys_and_tenants(self):
        tmp = tempfile.mkdtemp(prefix="xlstmd-web-keys-")
        keys = os.path.join(tmp, "keys")
        with open(keys, "w") as f:
            f.write("alice key-alice-1234567890\nbob key-bob-1234567890\n")
        os.chmod(keys, 0o600)
        d = self.web_daemon("--api-keys-file", keys)
        a = {"Authorization": "Bearer key-alice-1234567890"}
        b = {"Authorization": "Bearer key-bob-1234567890"}
        r = web.request(d.web_address, "GET", "/v1/models")
        self.assertEqual(r.status, 401)
        self.assertIn("Bearer", r.headers["www-authenticate"])
        self.assertEqual(r.json()["error"]["type"], "authentication_error")
        self.assertEqual(web.request(d.web_address, "GET", "/v1/models",
                                     headers={"Authorization": "Bearer nope"}).status, 401)
        sid = web.request(d.web_address, "POST", "/v1/sessions", {}, headers=a).json()["session_id"]
        self.assertEqual(web.request(d.web_address, "GET", f"/v1/sessions/{sid}", headers=a).status,
                         200)
        foreign = web.request(d.web_address, "GET", f"/v1/sessions/{sid}", headers=b)
        unknown_id = "A" * len(sid)
        unknown = web.request(d.web_address, "GET", f"/v1/sessions/{unknown_id}", headers=b)
        self.assertEqual(foreign.status, 404)
        self.assertEqual(foreign.body.replace(sid.encode(), b"ID"),
                         unknown.body.replace(unknown_id.encode(), b"ID"))
        # The page itself needs no key (it asks for one on 401).
        self.assertEqual(web.request(d.web_address, "GET", "/").status, 200)

    def test_body_cap_and_no_ui(self):
        d = self.web_daemon("--web-max-body-bytes", "2048", "--no-web-ui")
        r = web.request(d.web_address, "POST", "/v1/chat/completions", chat_body("x" * 4000))
        self.assertEqual(r.status, 413)
        self.assertEqual(web.request(d.web_address, "GET", "/").status, 404)
        self.assertEqual(web.request(d.web_address, "GET", "/v1/models").status, 200)

    def test_cors_only_for_the_configured_origins(self):
        d = self.web_daemon("--web-cors-origins", "https://app.example.com")
        pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        r = web.request(d.web_address, "OPTIONS", "/v1/chat/completions", headers=pre)
        self.assertEqual(r.status, 204)
        self.assertEqual(r.headers["access-control-allow-origin"], "https://app.example.com")
        pre["Origin"] = "https://evil.example.com"
        r = web.request(d.web_address, "OPTIONS", "/v1/chat/completions", headers=pre)
        self.assertEqual(r.status, 403)
        r = web.request(d.web_address, "GET", "/v1/models",
                        headers={"Origin": "https://evil.example.com"})
        self.assertEqual(r.status, 200)
        self.assertNotIn("access-control-allow-origin", r.headers)

    def test_an_older_response_without_checkpoints_is_409(self):
        d = self.web_daemon()
        post = lambda body: web.request(d.web_address, "POST", "/v1/responses", body)
        r1 = post({"input": "Hi", "max_output_tokens": 2}).json()
        post({"input": "More", "previous_response_id": r1["id"], "max_output_tokens": 2})
        r = post({"input": "x", "previous_response_id": r1["id"]})
        self.assertEqual(r.status, 409, r)
        self.assertIn("no longer resumable", r.json()["error"]["message"])
        self.assertEqual(r.headers["x-should-retry"], "false")

    def test_sigterm_mid_stream_ends_with_an_error_not_a_hang(self):
        d = self.web_daemon("--grace-period", "1s")
        s, it = self.long_stream(d)
        d.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rest = [data for (_, data) in it]
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(rest[-1], "[DONE]")
        err = json.loads(rest[-2])["error"]
        self.assertEqual(err["code"], "unavailable")
        s.close()
        self.assertEqual(d.wait_exit(20), 0)
        d.returncode = 0


if __name__ == "__main__":
    harness.main()
