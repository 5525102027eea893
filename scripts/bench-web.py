#!/usr/bin/python3
"""The web port against gRPC on the same daemon and model (issue 13, requirement 11): N
concurrent streamed turns over SSE (POST /v1/sessions/{id}/turns, parsed by the raw client of
tests/e2e/web_client.py) vs N over gRPC (Chat, the e2e harness's Python client), alternating
rounds so machine noise hits both. Prints one JSON report: aggregate generated tokens per
second of each transport, their ratio (web / gRPC; goal >= 0.95), and the mean time to first
token of each (the web's added TTFT is the difference).

  scripts/bench-web.py [--streams 64] [--tokens 64] [--rounds 3] [--bin-dir build/bin]

The model is made with `xlstm mkmodel` (E=512, 6 blocks, byte vocabulary: decode-bound on a
CPU) unless --model names a directory. Both clients are Python on the same machine as the
daemon, so the ratio compares the transports as a client of the same cost sees them.
"""

import argparse
import json
import os
import shutil
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import harness  # noqa: E402
import web_client as web  # noqa: E402
from harness import sampling  # noqa: E402

PROMPT = [72, 101, 108, 108, 111, 33, 10]


def run_round(fn, sessions, tokens):
    """Runs fn(session, tokens) on one thread per session; (tokens/s, mean TTFT ms)."""
    results = [None] * len(sessions)
    barrier = threading.Barrier(len(sessions) + 1)

    def worker(i):
        barrier.wait()
        results[i] = fn(sessions[i], tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    generated = sum(r[0] for r in results)
    ttft = sum(r[1] for r in results) / len(results)
    return generated / wall, ttft * 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None)
    args, rest = parser.parse_known_args()
    harness._configure(rest)
    made = None
    if args.model is None:
        made = harness.make_random_model("xlstmd-bench-web-")
        args.model = made
    d = harness.Daemon(["--web-listen", "127.0.0.1:0", "--max-batch", str(args.streams),
                        "--slots", str(2 * args.streams + 8), "--web-max-streams",
                        str(args.streams + 8)],
                       model_dir=args.model, threads=None, name="xlstmd(bench-web)").start()
    try:
        client = d.client()
        grpc_sessions = [client.create_session().session_id for _ in range(args.streams)]
        web_sessions = [client.create_session().session_id for _ in range(args.streams)]

        def grpc_turn(sid, n):
            t0 = time.monotonic()
            t = client.turn(sid, tokens=PROMPT, sampling=sampling(max_tokens=n, temperature=0.0))
            return len(t.ids), t.first_delta_time - t0

        def web_turn(sid, n):
            t0 = time.monotonic()
            s = web.SseStream(d.web_address, "POST", f"/v1/sessions/{sid}/turns",
                              {"tokens": {"ids": PROMPT}, "sampling": {"max_tokens": n}})
            count, first = 0, None
            for name, data in s:
                if name == "delta":
                    if first is None:
                        first = time.monotonic() - t0
                    count += len(json.loads(data)["token_ids"])
            s.close()
            return count, first or 0.0

        # One warm-up round each, not counted.
        run_round(grpc_turn, grpc_sessions, 8)
        run_round(web_turn, web_sessions, 8)
        rows = []
        for _ in range(args.rounds):
            g = run_round(grpc_turn, grpc_sessions, args.tokens)
            w = run_round(web_turn, web_sessions, args.tokens)
            rows.append({"grpc_tokens_per_s": round(g[0], 1), "web_tokens_per_s": round(w[0], 1),
                         "grpc_ttft_ms": round(g[1], 1), "web_ttft_ms": round(w[1], 1)})
        gt = sum(r["grpc_tokens_per_s"] for r in rows) / len(rows)
        wt = sum(r["web_tokens_per_s"] for r in rows) / len(rows)
        gf = sum(r["grpc_ttft_ms"] for r in rows) / len(rows)
        wf = sum(r["web_ttft_ms"] for r in rows) / len(rows)
        report = {"streams": args.streams, "tokens_per_turn": args.tokens, "rounds": rows,
                  "grpc_tokens_per_s": round(gt, 1), "web_tokens_per_s": round(wt, 1),
                  "ratio_web_over_grpc": round(wt / gt, 3),
                  "grpc_ttft_ms": round(gf, 1), "web_ttft_ms": round(wf, 1),
                  "web_added_ttft_ms": round(wf - gf, 1)}
        print(json.dumps(report, indent=1))
    finally:
        d.stop()
        if made:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
