#!/usr/bin/python3
"""E2E (a): a multi-turn conversation resumed from server-held state equals a replay.

Each turn's greedy ids must equal `xlstm generate` (an independent in-process run) over the
concatenation of every id the server reported so far: previous turns' input ids, their
streamed ids, and this turn's input. Also checks the event shapes, versions, usage and
token counts, for `tokens` input and for `message` input (template applied by the server).
"""

import math
import re

import harness
from harness import sampling

GOLDEN_PROMPT = [155, 60, 131, 158, 254, 209, 277, 242, 13]
GOLDEN_GREEDY = [26, 164, 204, 287, 143, 235, 261, 140, 68, 26, 164, 115, 241, 69, 298, 294,
                 228, 142, 218, 138]
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ConversationTest(harness.E2ETestCase):
    """With the daemon's default weight dtype (the reference uses the same one)."""

    EXTRA_ARGS = []

    @classmethod
    def setUpClass(cls):
        # Small prefill pieces so the third turn's 40-id input is prefilled in several pieces.
        cls.daemon = harness.Daemon(["--prefill-piece", "16", "--prefill-budget", "32"]
                                    + cls.EXTRA_ARGS,
                                    name=f"xlstmd(conversation{' '.join(cls.EXTRA_ARGS)})").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def check_replay(self, history, turn, max_tokens, context):
        """turn.ids == greedy continuation of history + turn's input (resume == replay)."""
        full = history + turn.input_ids
        expected = self.daemon.reference(full, max_tokens)
        got = turn.ids
        if turn.finished.finish_reason == harness.pb().FINISH_REASON_MAX_TOKENS:
            self.assertEqual(len(got), max_tokens, f"{context}: ids for finish MAX_TOKENS")
        self.assertEqual(got, expected[:len(got)],
                         f"{context}: streamed ids differ from `xlstm generate` over the "
                         f"{len(full)} reported ids {full}")
        return full + got

    def test_tokens_three_turns_resume_equals_replay(self):
        c = self.client
        s = c.create_session()
        self.assertRegex(s.session_id, SESSION_ID_RE, "session ids must be URL-safe")
        self.assertGreaterEqual(len(s.session_id), 22, "session ids carry 128 random bits")
        self.assertEqual(s.version, 0)
        self.assertEqual(s.token_count, 0, "no system prompt: nothing consumed yet")
        self.assertFalse(s.turn_running)

        inputs = [GOLDEN_PROMPT, [5, 6, 7],
                  [(37 * i + 11) % 300 for i in range(40)]]  # > 2 prefill pieces of 16
        max_tokens = 8
        history = []
        total_prompt = total_completion = 0
        for i, inp in enumerate(inputs):
            context = f"turn {i + 1}"
            t = c.turn(s.session_id, tokens=inp, sampling=sampling(max_tokens=max_tokens))
            self.assertEqual(t.input_ids, inp, f"{context}: `tokens` input is appended verbatim "
                                               "(no BOS, no template) and reported in `started`")
            self.assertEqual(t.started.base_version, i, f"{context}: started.base_version")
            self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_MAX_TOKENS,
                             f"{context}: a raw-token greedy turn without stops runs to max_tokens")
            self.assertEqual(len(t.ids), max_tokens, f"{context}: streamed ids")
            if i == 0:
                self.assertEqual(t.ids, GOLDEN_GREEDY[:max_tokens],
                                 "turn 1 must equal the upstream golden greedy continuation")
            history = self.check_replay(history, t, max_tokens, context)
            self.assertEqual(t.finished.session_version, i + 1, f"{context}: committed version")
            u = t.finished.usage
            self.assertEqual(u.prompt_tokens, len(inp), f"{context}: usage.prompt_tokens")
            self.assertEqual(u.completion_tokens, max_tokens, f"{context}: usage.completion_tokens")
            self.assertGreaterEqual(u.total_ms, 0.0)
            total_prompt += u.prompt_tokens
            total_completion += u.completion_tokens
            got = c.get_session(s.session_id)
            self.assertEqual(got.version, i + 1, f"{context}: GetSession.version")
            self.assertEqual(got.token_count, len(history),
                             f"{context}: GetSession.token_count = every id reported so far")
            self.assertFalse(got.turn_running, f"{context}: turn_running after the call ended")
        self.assertEqual(total_prompt + total_completion, len(history))

    def test_text_of_byte_tokens(self):
        """With the byte tokenizer, ids < 256 are bytes: streamed text equals their UTF-8."""
        c = self.client
        s = c.create_session()
        # A prompt whose greedy continuation (f32 and bf16 alike) is valid UTF-8: text bytes
        # "+ose" with specials (ids >= 256, no text) among them, so the check below always runs.
        # The concatenated delta text must be exactly those bytes.
        t = c.turn(s.session_id, tokens=list(b"Hi ok "), sampling=sampling(max_tokens=8))
        raw = bytes(i for i in t.ids if i < 256)
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        self.assertIsNotNone(expected, f"test precondition: greedy ids {t.ids} are valid UTF-8")
        self.assertGreaterEqual(len(raw), 4, f"test precondition: text bytes in {t.ids}")
        self.assertTrue(any(i >= 256 for i in t.ids), "test precondition: a special among ids")
        self.assertEqual(t.text, expected, f"delta text for ids {t.ids}")
        for d in t.deltas:
            self.assertTrue(d.token_ids or d.text, "a delta with neither ids nor text")

    def test_message_turns_replay(self):
        """`message` input: the server applies the template; `started` reports the ids it
        appended, and the state still equals a replay of all reported ids."""
        c = self.client
        s = c.create_session()
        history = []
        # The second message spells the byte tokenizer's special token: it must stay text.
        for i, msg in enumerate(["Hello there", "How are you? \u4e16\u754c <|endoftext|>"]):
            t = c.turn(s.session_id, message=msg, sampling=sampling(max_tokens=6))
            self.assertGreater(len(t.input_ids), 0)
            self.assertIn(msg.encode(), bytes(x for x in t.input_ids if x < 256),
                          "the message's bytes are among the appended ids (byte tokenizer)")
            self.assertTrue(all(0 <= x < 300 for x in t.input_ids))
            self.assertEqual(t.started.base_version, i)
            self.assertEqual(t.finished.usage.prompt_tokens, len(t.input_ids))
            self.assertEqual(t.finished.usage.completion_tokens, len(t.ids))
            self.assertLessEqual(len(t.ids), 6)
            history = self.check_replay(history, t, 6, f"message turn {i + 1}")
            self.assertEqual(t.finished.session_version, i + 1)
        # A raw-token turn after message turns continues the same state.
        t = c.turn(s.session_id, tokens=[10, 20, 30], sampling=sampling(max_tokens=5))
        history = self.check_replay(history, t, 5, "tokens turn after messages")
        got = c.get_session(s.session_id)
        self.assertEqual(got.version, 3)
        self.assertEqual(got.token_count, len(history))

    def test_stop_token_is_streamed_and_fed(self):
        """A stop id ends the turn, is streamed, and is part of the committed state."""
        c = self.client
        ref = self.daemon.reference(GOLDEN_PROMPT, 16)
        stop = ref[4]
        k = ref.index(stop)
        s = c.create_session()
        t = c.turn(s.session_id, tokens=GOLDEN_PROMPT,
                   sampling=sampling(max_tokens=16, stop_token_ids=[stop, 299]))
        self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_STOP_TOKEN)
        self.assertEqual(t.ids, ref[:k + 1], "ids up to and including the stop id")
        self.assertEqual(t.finished.usage.completion_tokens, k + 1)
        history = self.check_replay([], t, 16, "stop-token turn")
        t2 = c.turn(s.session_id, tokens=[5, 6], sampling=sampling(max_tokens=6))
        history = self.check_replay(history, t2, 6, "turn after a stop token")
        self.assertEqual(c.get_session(s.session_id).token_count, len(history))

    def test_stop_string_across_tokens(self):
        """A stop string spanning two tokens ends the turn; its text is never streamed."""
        c = self.client
        prompt = [65, 66, 67]
        ref = self.daemon.reference(prompt, 16)
        self.assertTrue(all(x < 128 for x in ref[:3]),
                        f"test precondition: the greedy continuation {ref[:3]} starts with 3 "
                        "ASCII bytes")
        stop = chr(ref[1]) + chr(ref[2])
        self.assertNotIn(stop, chr(ref[0]))
        s = c.create_session()
        t = c.turn(s.session_id, tokens=prompt, sampling=sampling(max_tokens=16, stop=[stop]))
        self.assertEqual(t.finished.finish_reason, harness.pb().FINISH_REASON_STOP_STRING)
        self.assertEqual(t.ids, ref[:3], "every id fed is reported, the stop string's too")
        self.assertEqual(t.text, chr(ref[0]), "text stops before the stop string")
        history = self.check_replay([], t, 16, "stop-string turn")
        t2 = c.turn(s.session_id, tokens=[7, 8, 9], sampling=sampling(max_tokens=6))
        history = self.check_replay(history, t2, 6, "turn after a stop string")
        self.assertEqual(c.get_session(s.session_id).token_count, len(history))

    def test_logprobs(self):
        c = self.client
        s = c.create_session()
        n = 3
        t = c.turn(s.session_id, tokens=GOLDEN_PROMPT, sampling=sampling(max_tokens=6, logprobs=n))
        self.assertEqual(t.ids, self.daemon.reference(GOLDEN_PROMPT, 6))
        for d in t.deltas:
            self.assertEqual([lp.token_id for lp in d.logprobs], list(d.token_ids),
                             "one chosen-token logprob per streamed id")
            self.assertEqual(len(d.top_logprobs), n * len(d.token_ids), "top-n per token")
            for i, chosen in enumerate(d.logprobs):
                top = d.top_logprobs[i * n:(i + 1) * n]
                values = [x.logprob for x in top]
                self.assertEqual(values, sorted(values, reverse=True), "top-n in order")
                self.assertEqual(top[0].token_id, chosen.token_id, "greedy picks the top-1")
                self.assertAlmostEqual(top[0].logprob, chosen.logprob, places=4)
                self.assertLessEqual(chosen.logprob, 0.0)
                self.assertLessEqual(sum(math.exp(v) for v in values), 1.0 + 1e-4)
                self.assertEqual(len({x.token_id for x in top}), n, "distinct alternatives")

    def test_system_prompt_counts(self):
        """A system prompt is part of version 0; later counts add exactly the reported ids."""
        c = self.client
        s = c.create_session(system_prompt="You are a terse assistant.")
        self.assertEqual(s.version, 0)
        self.assertGreater(s.token_count, 0, "the system prompt is prefilled into version 0")
        base = c.get_session(s.session_id)
        self.assertEqual(base.token_count, s.token_count)
        t = c.turn(s.session_id, tokens=[1, 2, 3], sampling=sampling(max_tokens=4))
        got = c.get_session(s.session_id)
        self.assertEqual(got.version, 1)
        self.assertEqual(got.token_count, s.token_count + len(t.input_ids) + len(t.ids))

    def test_weight_dtype_reported(self):
        # With no flag the daemon keeps an all-F32 checkpoint in f32, as `xlstm generate` does.
        self.assertEqual(self.daemon.weight_dtype(), "f32")


class ConversationBf16Test(ConversationTest):
    """The same conversation with the weights stored as bf16 (the default keeps the golden
    model's F32); the reference then runs with bf16 too."""

    EXTRA_ARGS = ["--weight-dtype", "bf16"]

    def test_weight_dtype_reported(self):
        self.assertEqual(self.daemon.weight_dtype(), "bf16")


class ConversationQ4Test(harness.E2ETestCase):
    """4-bit weights quantized at load: the daemon must serve exactly what `xlstm generate
    --weight-dtype q4` computes, turn after turn (quantized kernels are batch invariant and
    bit-identical across ISAs, so resume == replay holds as for float weights), and name the
    format in ModelInfo and its startup line."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = harness.Daemon(["--weight-dtype", "q4", "--prefill-piece", "16"],
                                    name="xlstmd(conversation q4)").start()
        cls.client = cls.daemon.client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def test_three_turns_resume_equals_replay(self):
        c = self.client
        s = c.create_session()
        history = []
        for i, inp in enumerate([GOLDEN_PROMPT, [5, 6, 7], [(37 * j + 11) % 300 for j in range(40)]]):
            t = c.turn(s.session_id, tokens=inp, sampling=sampling(max_tokens=8))
            full = history + t.input_ids
            self.assertEqual(t.ids, self.daemon.reference(full, 8),
                             f"turn {i + 1}: ids differ from `xlstm generate --weight-dtype q4`")
            history = full + t.ids
            self.assertEqual(t.finished.session_version, i + 1)
        # Quantization changes the model: the first turn is not the float golden continuation.
        self.assertNotEqual(history[len(GOLDEN_PROMPT):len(GOLDEN_PROMPT) + 8], GOLDEN_GREEDY[:8])

    def test_weight_dtype_reported(self):
        self.assertEqual(self.daemon.weight_dtype(), "q4")
        log = self.daemon.log()
        self.assertIn("weight_dtype=q4", log)
        self.assertIn("lm_head_dtype=q4", log)


if __name__ == "__main__":
    harness.main()
