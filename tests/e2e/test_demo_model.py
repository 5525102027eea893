#!/usr/bin/env python3
"""The bundled demo model (models/demo): served by default, conformant, and able to chat.

- the daemon started with no --model serves models/demo (its startup line says
  random_weights=false; a model from `xlstm mkmodel` says true, with a warning) and holds a three-turn conversation
  whose replies are clean text (valid UTF-8, no template markers, no control bytes);
- the same conversation resumes after a restart with --state-dir, and the third reply equals
  the one an uninterrupted daemon gives (greedy), so the restored state is the real one;
- the runtime's logits on held-out text equal the trainer's (reference_logits.json, computed
  by tools/train/model.py on the exported bf16 weights) within the golden tolerance, in
  prefill and step mode;
- the quality figures of models/demo/README.md hold on a 50-question subset (bounds set
  below the full-set figures so that CPU-dependent rounding cannot flip them, but far above
  what a broken export or a random model gives);
- quantized at load (int8, q4), the model's held-out perplexity stays within a few percent of
  bf16's (docs/runtime.md measures +-0.05 % and +0.5 %; a broken dequantization moves it by
  far more).
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_quality  # noqa: E402
import harness  # noqa: E402

DEMO = demo_quality.DEMO_MODEL
MARKERS = ("<|endoftext|>", "User:", "Assistant:")
QUESTIONS = ["Hello, who are you?", "What does serendipity mean?",
             "What is another word for happy?"]

# Golden tolerance (../shared/golden: ~10x upstream's own path disagreement).
LOGITS_ATOL = 1.2e-3
LOGITS_RTOL = 1e-4


class DefaultDaemon(harness.Daemon):
    """xlstmd without --model: it must find models/demo by itself."""

    def command(self):
        cmd = super().command()
        i = cmd.index("--model")
        return cmd[:i] + cmd[i + 2:]


class DemoModelTest(harness.E2ETestCase):
    def start_default(self, args=(), name="xlstmd(default)", **kw):
        d = DefaultDaemon(args, model_dir=DEMO, name=name, **kw)
        self.addCleanup(self._stop_quietly_if_needed, d)
        d.start()
        return d

    def check_reply(self, turn, context):
        text = turn.text
        self.assertTrue(text.strip(), f"{context}: empty reply {turn!r}")
        for m in MARKERS:
            self.assertNotIn(m, text, f"{context}: template marker in the reply {text!r}")
        self.assertNotIn("\ufffd", text, f"{context}: invalid UTF-8 in the reply {text!r}")
        bad = [c for c in text if ord(c) < 32 and c not in "\n\t"]
        self.assertFalse(bad, f"{context}: control characters in the reply {text!r}")

    def conversation(self, client, session_id, questions):
        replies = []
        for i, q in enumerate(questions):
            t = client.turn(session_id, message=q,
                            sampling=harness.sampling(temperature=0, max_tokens=96))
            self.check_reply(t, f"turn {i + 1} ({q!r})")
            replies.append(t.text)
        return replies

    def test_default_model_chats_and_resumes_after_restart(self):
        state = tempfile.mkdtemp(prefix="xlstmd-demo-state-")
        self.addCleanup(shutil.rmtree, state, True)
        # Reference: three turns on one uninterrupted daemon.
        d = self.start_default()
        self.assertRegex(d.log(), r"model=\S*models/demo\b", "startup line names models/demo")
        self.assertRegex(d.log(), r"xlstmd serving .* load_s=\d+\.\d\d\b", "load time")
        self.assertRegex(d.log(), r"xlstmd serving .* random_weights=false\b", "trained weights")
        self.assertRegex(d.log(), r"xlstmd serving .* cuda_math=(exact|bf16)\b", "numerics named")
        info = d.client().model_info()
        self.assertEqual(info.vocab_size, 4416)
        client = d.client()
        s = client.create_session()
        reference = self.conversation(client, s.session_id, QUESTIONS)
        d.stop()

        # The same conversation, with a restart between turns 2 and 3.
        d1 = self.start_default(["--state-dir", state, "--durability", "sync"], name="first")
        c1 = d1.client()
        s1 = c1.create_session()
        first = self.conversation(c1, s1.session_id, QUESTIONS[:2])
        self.assertEqual(first, reference[:2], "the same greedy turns give the same replies")
        d1.stop()
        d2 = self.start_default(["--state-dir", state, "--durability", "sync"], name="second")
        c2 = d2.client()
        self.assertEqual(c2.get_session(s1.session_id).version, 2)
        third = self.conversation(c2, s1.session_id, QUESTIONS[2:])
        self.assertEqual(third, reference[2:],
                         "the resumed session continues from the stored state")

    def test_a_random_model_is_labelled_at_startup(self):
        model = harness.make_random_model(embedding_dim=64, num_blocks=2)
        self.addCleanup(shutil.rmtree, model, True)
        d = self.start_daemon(model_dir=model)
        self.assertRegex(d.log(), r"xlstmd serving .* random_weights=true\b")
        self.assertRegex(d.log(), r"warn model \S+ has random weights")

    def test_runtime_logits_equal_the_trainers(self):
        with open(os.path.join(DEMO, "reference_logits.json"), encoding="utf-8") as f:
            ref = json.load(f)
        for mode in ("prefill", "step"):
            logits = demo_quality.score(DEMO, ref["tokens"], mode=mode).astype(np.float64)
            self.assertEqual(logits.shape, (len(ref["tokens"]), 4416))
            worst = 0.0
            for r, row in enumerate(ref["rows"]):
                got = logits[r, row["ids"]]
                want = np.array(row["logits"])
                err = np.abs(got - want) - LOGITS_RTOL * np.abs(want)
                worst = max(worst, float(err.max()))
                lse = logits[r].max() + np.log(np.exp(logits[r] - logits[r].max()).sum())
                self.assertLess(abs(lse - row["logsumexp"]), LOGITS_ATOL,
                                f"{mode}: row {r} log-sum-exp")
                self.assertEqual(int(np.argmax(logits[r])), row["argmax"], f"{mode}: row {r}")
            self.assertLess(worst, LOGITS_ATOL, f"{mode}: worst |logit error| beyond rtol")

    def test_quality_on_a_subset(self):
        d = self.start_default(threads=None)
        figures, answers = demo_quality.measure(d.client(), DEMO, 50)
        detail = json.dumps(figures) + "\n" + "\n".join(json.dumps(a) for a in answers[:10])
        self.assertLessEqual(figures["ppl_ratio"], 0.5, detail)
        self.assertGreaterEqual(figures["self_stop"], 0.9, detail)
        self.assertGreaterEqual(figures["gloss_overlap"], 0.08, detail)

    def test_quantized_weights_keep_the_heldout_perplexity(self):
        pairs = demo_quality.load_eval()["heldout"][:40]  # ~1,100 answer tokens
        ppl = {}
        for dtype in ("bf16", "int8", "q4"):
            loss, count = demo_quality.heldout_loss(DEMO, pairs, weight_dtype=dtype)
            self.assertGreater(count, 500)
            ppl[dtype] = float(np.exp(loss))
        detail = json.dumps(ppl)
        self.assertLess(abs(ppl["int8"] / ppl["bf16"] - 1), 0.01, detail)
        self.assertLess(abs(ppl["q4"] / ppl["bf16"] - 1), 0.04, detail)


if __name__ == "__main__":
    harness.main()
