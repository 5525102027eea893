#!/usr/bin/python3
"""E2E: observability of the real daemon started with --http-listen 127.0.0.1:0.

A known workload over gRPC, then /metrics must equal the traffic exactly (tokens streamed,
turns by finish reason, histogram counts, failed calls by method and code, avoided prefill,
sessions by tier), the exposition must pass `promtool check metrics`, the HTTP endpoints must
answer 200/404/405 as documented, and the --log-format json output must be one valid JSON
object per line with one `turn` line per Chat call, naming sessions only by their hash and
never holding prompt text (no --log-prompts). Finally /readyz turns 503 while draining after
SIGTERM, while /healthz and /metrics keep answering. A missing promtool is a failure.
"""

import collections
import hashlib
import json
import re
import shutil
import signal
import subprocess
import time

import grpc

import harness
from harness import metric, sampling

Code = grpc.StatusCode
SECRET = "SECRET-PROMPT-7c1f the quick brown fox"
UNKNOWN_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # well-formed, never issued
FINISH_NAMES = {1: "stop_token", 2: "stop_string", 3: "max_tokens"}


def delta(after, before, name, **labels):
    return metric(after, name, **labels) - metric(before, name, **labels)


class MetricsTest(harness.E2ETestCase):

    def test_metrics_logs_and_probes_match_the_traffic(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found (Debian package prometheus); "
                                       "run scripts/bootstrap.sh")
        d = self.start_daemon(["--http-listen", "127.0.0.1:0", "--log-format", "json",
                               "--grace-period", "30s", "--max-tokens-limit", "1000000"],
                              name="xlstmd(metrics)")
        self.assertIsNotNone(d.http_address, "the serving line has no http=HOST:PORT")
        self.assertRegex(d.http_address, r"^127\.0\.0\.1:[1-9]\d*$")

        # ---- endpoints ----
        status, headers, body = d.http("/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(d.http("/healthz")[0], 200)
        self.assertEqual(d.http("/readyz")[:3:2], (200, "ready\n"))
        self.assertEqual(d.http("/no/such/path")[0], 404)
        status, headers, _ = d.http("/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertIn("GET", headers.get("allow", ""))
        self.assertEqual(d.http("/readyz", method="DELETE")[0], 405)
        d.assert_serving("after bad HTTP requests")

        # ---- workload ----
        before = d.metrics()
        c = d.client()
        turns = []        # every committed turn, as streamed
        chat_calls = 0    # Chat calls made (a log line each)
        s1 = c.create_session()
        s2 = c.create_session()
        s3 = c.create_session()
        conv = harness.Conversation(d, s1.session_id)
        expected_history = []
        for i, (prompt, n) in enumerate((([155, 60, 131], 5), ([13, 77], 6), ([200], 7))):
            expected_history.append(len(conv.history))
            turns.append(conv.turn(c, prompt, max_tokens=n, check=False, context=f"turn {i}"))
            chat_calls += 1
        # A chat message whose text must never reach the log.
        t = c.turn(s2.session_id, message=SECRET, sampling=sampling(max_tokens=4))
        expected_history.append(0)
        turns.append(t)
        chat_calls += 1
        # A stop-token finish: the same prompt as turn 0 on a fresh session, stopping at the
        # third id greedy decoding produced there.
        stop_id = turns[0].ids[2]
        t = c.turn(s3.session_id, tokens=[155, 60, 131],
                   sampling=sampling(max_tokens=10, stop_token_ids=[stop_id]))
        self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_STOP_TOKEN)
        expected_history.append(0)
        turns.append(t)
        chat_calls += 1
        # Failures: NOT_FOUND twice, INVALID_ARGUMENT once.
        self.assertRpcError(lambda: c.get_session(UNKNOWN_ID), Code.NOT_FOUND)
        self.assertRpcError(lambda: c.turn(UNKNOWN_ID, tokens=[1], sampling=sampling(max_tokens=2)),
                            Code.NOT_FOUND)
        self.assertRpcError(lambda: c.turn("", tokens=[1], sampling=sampling(max_tokens=2)),
                            Code.INVALID_ARGUMENT)
        chat_calls += 2
        after = d.metrics()

        # ---- counters equal the traffic ----
        streamed = sum(len(t.ids) for t in turns)
        self.assertEqual(delta(after, before, "xlstmd_generated_tokens_total"), streamed)
        self.assertEqual(delta(after, before, "xlstmd_prompt_tokens_total"),
                         sum(len(t.input_ids) for t in turns))
        self.assertEqual(sum(t.finished.usage.prompt_tokens for t in turns),
                         sum(len(t.input_ids) for t in turns))
        self.assertEqual([t.finished.usage.history_tokens for t in turns], expected_history,
                         "Usage.history_tokens is the session's token count before the turn")
        self.assertEqual(delta(after, before, "xlstmd_prefill_tokens_avoided_total"),
                         sum(expected_history))
        for name in ("xlstmd_time_to_first_token_seconds", "xlstmd_turn_duration_seconds",
                     "xlstmd_queue_time_seconds", "xlstmd_prefill_time_seconds"):
            self.assertEqual(delta(after, before, name + "_count"), len(turns), name)
            self.assertEqual(delta(after, before, name + "_bucket", le="+Inf"), len(turns), name)
        self.assertEqual(delta(after, before, "xlstmd_inter_token_latency_seconds_count"),
                         sum(len(t.ids) - 1 for t in turns))
        # Every generated id is fed to the model once in a decode step.
        self.assertEqual(delta(after, before, "xlstmd_decode_batch_size_sum"), streamed)
        reasons = collections.Counter(FINISH_NAMES[t.finished.finish_reason] for t in turns)
        for reason in ("stop_token", "stop_string", "max_tokens"):
            self.assertEqual(delta(after, before, "xlstmd_turns_total", finish_reason=reason),
                             reasons[reason], reason)
        chat = "xlstmd.v1.ChatService/Chat"
        self.assertEqual(delta(after, before, "xlstmd_requests_failed_total",
                               method="xlstmd.v1.ChatService/GetSession", code="NOT_FOUND"), 1)
        self.assertEqual(delta(after, before, "xlstmd_requests_failed_total", method=chat,
                               code="NOT_FOUND"), 1)
        self.assertEqual(delta(after, before, "xlstmd_requests_failed_total", method=chat,
                               code="INVALID_ARGUMENT"), 1)
        self.assertEqual(delta(after, before, "xlstmd_requests_total", method=chat), chat_calls)
        self.assertEqual(delta(after, before, "xlstmd_requests_total",
                               method="xlstmd.v1.ChatService/CreateSession"), 3)
        # Second and third turns of s1 found its state resident; first turns restore nothing.
        self.assertEqual(delta(after, before, "xlstmd_state_restores_total", tier="resident"), 2)

        # ---- gauges read from the engine ----
        per_session = metric(after, "xlstmd_state_bytes_per_session")
        self.assertGreater(per_session, 0)
        self.assertEqual(metric(after, "xlstmd_sessions"), 3)
        self.assertEqual(metric(after, "xlstmd_tier_sessions", tier="resident"), 3)
        self.assertEqual(metric(after, "xlstmd_tier_state_bytes", tier="resident"),
                         3 * per_session)
        self.assertEqual(metric(after, "xlstmd_queue_depth"), 0)
        self.assertEqual(metric(after, "xlstmd_running_turns"), 0)
        # The CPU backend pins nothing: state copies there are a memcpy from any memory.
        self.assertEqual(metric(after, "xlstmd_pinned_state_bytes"), 0)
        self.assertEqual(metric(after, "xlstmd_pinned_state_fallbacks_total"), 0)
        info = c.model_info()
        model_info = [k for k in after if k[0] == "xlstmd_model_info"]
        self.assertEqual(len(model_info), 1)
        labels = dict(model_info[0][1])
        self.assertEqual(labels["family"], info.family)
        self.assertEqual(labels["weight_dtype"], info.weight_dtype)
        self.assertEqual(labels["vocab_size"], str(info.vocab_size))
        build = [dict(k[1]) for k in after if k[0] == "xlstmd_build_info"]
        self.assertEqual(len(build), 1)
        self.assertRegex(build[0]["commit"], r"^([0-9a-f]{12}(-dirty)?|unknown)$")
        for (name, _), _ in after.items():
            self.assertTrue(name.startswith("xlstmd_"), name)

        # ---- promtool accepts the exposition ----
        text = d.metrics_text()
        proc = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                              capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0,
                         f"promtool check metrics: {proc.stdout}{proc.stderr}")

        # ---- JSON logs: one object per line, one `turn` line per Chat call ----
        turn_lines = self._wait_turn_lines(d, chat_calls)
        ids = {s1.session_id, s2.session_id, s3.session_id, UNKNOWN_ID}
        for line in self._stderr_lines(d):
            for sid in ids:
                self.assertNotIn(sid, line, "a raw session id in the log")
            self.assertNotIn("SECRET-PROMPT", line, "prompt text in the log without --log-prompts")
        ok_lines = [j for j in turn_lines if j["code"] == "OK"]
        self.assertEqual({j["session"] for j in ok_lines},
                         {self._hash(x.session_id) for x in (s1, s2, s3)},
                         "sessions are named by the first 16 hex digits of SHA-256(id)")
        self.assertEqual(len(ok_lines), len(turns))
        self.assertEqual(sorted(j["tokens_out"] for j in ok_lines),
                         sorted(len(t.ids) for t in turns))
        for j in ok_lines:
            self.assertRegex(j["session"], r"^[0-9a-f]{16}$")
            for key in ("request_id", "tokens_in", "ttft_ms", "duration_ms", "finish"):
                self.assertIn(key, j)
            self.assertNotIn("prompt", j)
            self.assertNotIn("reply", j)
        self.assertEqual(sorted(j["code"] for j in turn_lines if j["code"] != "OK"),
                         ["INVALID_ARGUMENT", "NOT_FOUND"])

        # ---- draining: readiness off, liveness and metrics on ----
        reader = harness.StreamReader(c.chat_call(s1.session_id, tokens=[9],
                                                  sampling=sampling(max_tokens=1_000_000),
                                                  timeout=120))
        reader.wait_first_delta()
        d.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while d.http("/readyz")[0] != 503:
            self.assertLess(time.monotonic(), deadline, "/readyz never turned 503 after SIGTERM")
            time.sleep(0.02)
        self.assertTrue(d.alive(), "test design: the daemon must still be draining")
        self.assertEqual(d.http("/readyz")[2], "not ready: draining\n")
        self.assertEqual(d.http("/healthz")[0], 200)
        self.assertEqual(d.http("/metrics")[0], 200)
        d.send_signal(signal.SIGTERM)  # skip the grace period: the turn is cancelled
        reader.join(60)
        self.assertEqual(d.wait_exit(30), 0)

    def test_log_prompts_puts_prompt_and_reply_in_the_text_line(self):
        d = self.start_daemon(["--log-prompts"], name="xlstmd(log-prompts)")
        c = d.client()
        s = c.create_session()
        prompt = 'say "hi"\nthen stop'
        t = c.turn(s.session_id, message=prompt, sampling=sampling(max_tokens=3))
        deadline = time.monotonic() + 10
        while True:
            lines = [l for l in self._stderr_lines(d) if " info turn " in l]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(len(lines), 1, "one text `turn` line")
        line = lines[0]
        # logfmt: quotes and the newline escaped, so the line stays one line.
        self.assertIn('prompt="say \\"hi\\"\\nthen stop"', line)
        self.assertIn(" reply=", line)
        self.assertIn(f"tokens_out={len(t.ids)}", line)
        self.assertIn(f"session={self._hash(s.session_id)}", line)
        self.assertNotIn(s.session_id, line)

    @staticmethod
    def _hash(session_id):
        return hashlib.sha256(session_id.encode()).hexdigest()[:16]

    def _stderr_lines(self, d):
        with d._lines_lock:
            lines = list(d._lines)
        return [l[len("[stderr] "):] for l in lines if l.startswith("[stderr] ")]

    def _wait_turn_lines(self, d, want, timeout=10.0):
        """The JSON `turn` lines once there are `want` (each call logs when it is done)."""
        deadline = time.monotonic() + timeout
        while True:
            turn_lines = []
            for line in self._stderr_lines(d):
                try:
                    j = json.loads(line)
                except ValueError:
                    self.fail(f"--log-format json wrote a line that is not JSON: {line!r}")
                self.assertIsInstance(j, dict, line)
                for key in ("ts", "level", "msg"):
                    self.assertIn(key, j, line)
                if j["msg"] == "turn":
                    turn_lines.append(j)
            if len(turn_lines) >= want or time.monotonic() > deadline:
                self.assertEqual(len(turn_lines), want, "one `turn` log line per Chat call")
                return turn_lines
            time.sleep(0.05)


if __name__ == "__main__":
    harness.main()
