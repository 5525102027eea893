#!/usr/bin/env bash
# Server-vs-in-process benchmark (issue 4): starts build/bin/xlstmd on MODEL on a free loopback
# port, drives it with `xlstm loadgen`, runs `xlstm bench` in-process on the same model and
# threads, and prints one JSON line per comparison:
#   {"bench":"decode", "sessions":N, "server_tokens_per_s":..., "inprocess_tokens_per_s":..., "ratio":...}
#   {"bench":"ttft_by_turn", "turns":T, "ttft_ratio":..., "replay_ttft_ratio":...}
# Usage: scripts/bench-server.sh MODEL [THREADS] [SESSIONS_LIST] [TURNS]
# Example (issue 4's figures): build/bin/xlstm mkmodel --family xlstm --embedding-dim 1024
#   --num-blocks 12 --num-heads 8 --vocab 50304 --weight-dtype bf16 --seed 1 --out /tmp/m1024
#   scripts/bench-server.sh /tmp/m1024 2 1,8,32,64 64
# The daemon and the load generator share the machine, so on a small host the client's own
# CPU time counts against the server; the in-process run has no such cost.
set -euo pipefail
cd "$(dirname "$0")/.."

model=${1:?usage: scripts/bench-server.sh MODEL [THREADS] [SESSIONS_LIST] [TURNS]}
threads=${2:-2}
sessions_list=${3:-1,8,32,64}
turns=${4:-64}
bin=build/bin
py=/usr/bin/python3
work=$(mktemp -d)
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The address is parsed from the startup line (port 0 picks a free one).
start_daemon_info() {
  "$bin/xlstmd" --model "$model" --threads "$threads" --listen 127.0.0.1:0 --slots 64 \
    --max-batch 64 --max-prompt-tokens 65536 >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 600); do
    if grep -q 'xlstmd serving' "$work/daemon.log" 2>/dev/null; then break; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then cat "$work/daemon.log" >&2; exit 1; fi
    sleep 0.1
  done
  addr=$(grep -o 'listen=[0-9.]*:[0-9]*' "$work/daemon.log" | head -1 | cut -d= -f2)
  [ -n "$addr" ] || { echo "daemon did not report its address" >&2; cat "$work/daemon.log" >&2; exit 1; }
}

# In-process figures before and after the daemon runs, averaged: the host's speed drifts by a
# few percent over minutes, which would otherwise land on one side of the ratio.
"$bin/xlstm" bench --model "$model" --threads "$threads" --batch "$sessions_list" \
  --prompt-len 16 >"$work/inproc_before.jsonl"
start_daemon_info
IFS=, read -r -a sessions_arr <<<"$sessions_list"
# Decode throughput: short prompts, long replies (400 tokens), so the decode phase dominates:
# all sessions start together but reach their first token over ~1 s of prefill, and the
# batch is smaller while they ramp up and down; with short replies that ramp would dominate
# the figure compared, decode_tokens_per_s (ids after each turn's first / union of decode
# intervals), which measures steady-state decoding.
for n in "${sessions_arr[@]}"; do
  nice -n 19 "$bin/xlstm" loadgen --server "$addr" --sessions "$n" --turns 1 --prompt-tokens 16 \
    --max-tokens 400 --channels 1 >"$work/load_$n.json"
done
# TTFT by turn: one conversation of $turns turns, stateful and --replay.
"$bin/xlstm" loadgen --server "$addr" --sessions 1 --turns "$turns" --prompt-tokens 32 \
  --max-tokens 16 >"$work/ttft.json"
"$bin/xlstm" loadgen --server "$addr" --sessions 1 --turns "$turns" --prompt-tokens 32 \
  --max-tokens 16 --replay >"$work/ttft_replay.json"
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=

"$bin/xlstm" bench --model "$model" --threads "$threads" --batch "$sessions_list" \
  --prompt-len 16 >"$work/inproc_after.jsonl"

"$py" - "$work" "$sessions_list" <<'EOF'
import json, sys, os
work, sessions = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
runs = {}
for name in ("inproc_before.jsonl", "inproc_after.jsonl"):
    for line in open(os.path.join(work, name)):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if j.get("phase") == "decode":
            runs.setdefault(j["batch"], []).append(j["tokens_per_s"])
inproc = {b: sum(v) / len(v) for b, v in runs.items()}
for n in sessions:
    j = json.load(open(os.path.join(work, f"load_{n}.json")))
    s = j["decode_tokens_per_s"]
    ip = inproc.get(n)
    print(json.dumps({"bench": "decode", "sessions": n, "server_tokens_per_s": s,
                      "inprocess_tokens_per_s": ip,
                      "inprocess_runs": runs.get(n),
                      "ratio": round(s / ip, 3) if ip else None,
                      "ttft_p50_ms": j["ttft_ms"]["p50"], "itl_p50_ms": j["itl_ms"]["p50"],
                      "errors": j["errors_by_code"]}))
def ratio(name):
    j = json.load(open(os.path.join(work, name)))
    by_turn = j["ttft_ms_by_turn"]
    return by_turn, round(by_turn[-1] / by_turn[0], 3)
st, r = ratio("ttft.json")
rp, rr = ratio("ttft_replay.json")
print(json.dumps({"bench": "ttft_by_turn", "turns": len(st), "ttft_first_ms": st[0],
                  "ttft_last_ms": st[-1], "ttft_ratio": r, "replay_ttft_first_ms": rp[0],
                  "replay_ttft_last_ms": rp[-1], "replay_ttft_ratio": rr}))
EOF
