#!/usr/bin/env python3
"""The demo model's quality figures, measured through the real daemon and CLI.

    demo_quality.py [--bin-dir build/bin] [--model models/demo] [--questions 200] [--samples]
    demo_quality.py --weight-dtypes bf16,int8,q4 [--lm-head-dtype bf16]

Prints one JSON object with:
- `gloss_overlap`: share of "What does W mean?" questions (WordNet headwords from the
  training split, tests/data/demo_eval.json) whose greedy reply shares at least one content
  word with any of W's WordNet definitions (stop words and W's own words excluded);
- `self_stop`: share of those replies that end by themselves (stop token or stop string)
  within 128 tokens;
- `heldout_ppl`, `unigram_ppl`, `ppl_ratio`: perplexity of the served model on held-out
  answers (words never defined in training) against a unigram model of the training answers,
  over the same tokens (`xlstm score`, the runtime's own logits).
tests/e2e/test_demo_model.py checks the same figures on a subset; models/demo/README.md
reports the full ones.

With --weight-dtypes, only the held-out perplexity, once per weight format (quantized at
load by `xlstm score --weight-dtype`), one JSON line each with its change against the first
(docs/runtime.md's quantization quality table).
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

EVAL_FILE = os.path.join(harness.REPO_ROOT, "tests", "data", "demo_eval.json")
DEMO_MODEL = os.path.join(harness.REPO_ROOT, "models", "demo")
EOT = 0

STOP_WORDS = set("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each either else
especially etc every few for from further had has have having he her here hers him his how i
if in into is it its itself just least less like made make many may me more most much must my
no nor not of off often on once one only or other others our out over own per rather same
she should so some something somebody someone such than that the their them then there these
they this those through to too under until up upon used usually very was way we were what
when where which while who whom whose why will with within without would you your
""".split())


def content_words(text, exclude=()):
    words = set(re.findall(r"[a-z]+", text.lower()))
    return {w for w in words if w not in STOP_WORDS and w not in exclude and len(w) > 1}


def load_eval():
    with open(EVAL_FILE, encoding="utf-8") as f:
        return json.load(f)


def ask(client, question, max_tokens=128, temperature=0.0, seed=0):
    """One question in a fresh session; returns the finished Turn. The session is deleted."""
    session = client.create_session()
    try:
        return client.turn(session.session_id, message=question,
                           sampling=harness.sampling(temperature=temperature, seed=seed,
                                                     max_tokens=max_tokens), timeout=120)
    finally:
        client.delete_session(session.session_id)


def gloss_figures(client, questions):
    pb = harness.pb()
    overlap = stopped = 0
    answers = []
    for q in questions:
        t = ask(client, q["question"])
        exclude = set(re.findall(r"[a-z]+", q["word"].lower()))
        truth = set().union(*(content_words(g, exclude) for g in q["glosses"]))
        hit = bool(content_words(t.text, exclude) & truth)
        ended = t.finished.finish_reason in (pb.FINISH_REASON_STOP_TOKEN,
                                             pb.FINISH_REASON_STOP_STRING)
        overlap += hit
        stopped += ended
        answers.append({"question": q["question"], "reply": t.text, "overlap": hit,
                        "self_stop": ended})
    n = max(len(questions), 1)
    return overlap / n, stopped / n, answers


def tokenize(model_dir, texts):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
        path = f.name
    try:
        out = subprocess.run([harness.CONFIG.xlstm, "tokenize", "--tokenizer", model_dir,
                              "--jsonl", path], check=True, capture_output=True, text=True)
    finally:
        os.unlink(path)
    return [json.loads(line) for line in out.stdout.splitlines()]


def read_logits(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    lo, hi = head["logits"]["data_offsets"]
    return np.frombuffer(raw[8 + n + lo: 8 + n + hi], dtype=np.float32).reshape(
        head["logits"]["shape"])


def score(model_dir, tokens, mode="prefill", weight_dtype=None, lm_head_dtype=None):
    """The runtime's logits [T, V] for `tokens` from a zero state (`xlstm score`)."""
    fd, out = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    extra = []
    if weight_dtype:
        extra += ["--weight-dtype", weight_dtype]
    if lm_head_dtype:
        extra += ["--lm-head-dtype", lm_head_dtype]
    try:
        subprocess.run([harness.CONFIG.xlstm, "score", "--model", model_dir, "--tokens",
                        ",".join(map(str, tokens)), "--mode", mode, "--out", out] + extra,
                       check=True, capture_output=True)
        return read_logits(out)
    finally:
        os.unlink(out)


def heldout_loss(model_dir, pairs, per_call=10, **score_args):
    """Mean cross-entropy of the answers (+ stop token) of `pairs`, laid out as the chat
    template lays out a conversation of `per_call` turns."""
    texts = []
    for i, p in enumerate(pairs):
        texts.append(("\n" if i % per_call else "") + f"User: {p['q']}\nAssistant:")
        texts.append(" " + p["a"])
    ids = tokenize(model_dir, texts)
    total, count = 0.0, 0
    for start in range(0, len(pairs), per_call):
        tokens, targets = [EOT], []
        for i in range(start, min(start + per_call, len(pairs))):
            tokens += ids[2 * i]
            answer = ids[2 * i + 1] + [EOT]
            targets += range(len(tokens), len(tokens) + len(answer))
            tokens += answer
        logits = score(model_dir, tokens[:-1], **score_args).astype(np.float64)
        for pos in targets:
            row = logits[pos - 1]
            lse = row.max() + math.log(np.exp(row - row.max()).sum())
            total += lse - row[tokens[pos]]
            count += 1
    return total / count, count


def measure(client, model_dir, n_questions):
    data = load_eval()
    overlap, self_stop, answers = gloss_figures(client, data["questions"][:n_questions])
    loss, count = heldout_loss(model_dir, data["heldout"])
    return {
        "questions": n_questions,
        "gloss_overlap": round(overlap, 4),
        "self_stop": round(self_stop, 4),
        "heldout_tokens": count,
        "heldout_ppl": round(math.exp(loss), 2),
        "unigram_ppl": round(math.exp(data["unigram_loss"]), 2),
        "ppl_ratio": round(math.exp(loss - data["unigram_loss"]), 4),
    }, answers


def quantized_perplexity(model_dir, dtypes, lm_head_dtype):
    pairs = load_eval()["heldout"]
    first = None
    for dtype in dtypes:
        loss, count = heldout_loss(model_dir, pairs, weight_dtype=dtype,
                                   lm_head_dtype=lm_head_dtype if dtype != dtypes[0] else None)
        ppl = math.exp(loss)
        first = first or ppl
        print(json.dumps({"weight_dtype": dtype,
                          "lm_head_dtype": (lm_head_dtype if dtype != dtypes[0] else None)
                          or dtype,
                          "heldout_tokens": count, "heldout_ppl": round(ppl, 3),
                          "ppl_change_pct": round(100 * (ppl / first - 1), 2)}))


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=DEMO_MODEL)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--samples", action="store_true", help="also print every question/reply")
    ap.add_argument("--weight-dtypes", default="",
                    help="comma-separated formats: held-out perplexity of each, nothing else")
    ap.add_argument("--lm-head-dtype", default="", help="with --weight-dtypes")
    args, rest = ap.parse_known_args()
    harness._configure(rest)
    if args.weight_dtypes:
        return quantized_perplexity(args.model, args.weight_dtypes.split(","),
                                    args.lm_head_dtype or None)
    daemon = harness.Daemon(model_dir=os.path.abspath(args.model), threads=None,
                            name="xlstmd(demo)")
    daemon.start()
    try:
        figures, answers = measure(harness.Client(daemon.channel()), args.model, args.questions)
    finally:
        daemon.stop()
    if args.samples:
        for a in answers:
            print(json.dumps(a, ensure_ascii=False))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
