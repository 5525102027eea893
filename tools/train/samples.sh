#!/usr/bin/env bash
# Prints the model card's sample conversations: each prompt asked through `xlstm chat` of a
# freshly started xlstmd serving MODEL, greedy (temperature 0) and sampled (0.7, seed 1).
#   tools/train/samples.sh [BIN_DIR] [MODEL_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/bin}
MODEL=${2:-$ROOT/models/demo}
LOG=$(mktemp)
"$BIN/xlstmd" --model "$MODEL" --listen 127.0.0.1:0 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
  ADDR=$(grep -o 'listen=[^ ]*' "$LOG" | head -1 | cut -d= -f2 || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$LOG"; exit 1; }
PROMPTS=(
  "Hello, who are you?"
  "What does serendipity mean?"
  "What is a lighthouse?"
  "What is another word for happy?"
  "What is the opposite of ancient?"
  "What does hack mean in hacker jargon?"
  "Give me a cynical definition of lawyer."
  "Tell me a quote about science."
  "What is Debian?"
  "Define algorithm."
)
for temp in 0 0.7; do
  echo "### temperature $temp"
  for p in "${PROMPTS[@]}"; do
    reply=$("$BIN/xlstm" chat --server "$ADDR" --message "$p" --temperature "$temp" --seed 1 \
      --max-tokens 128 2>/dev/null)
    printf -- '- **User:** %s\n  **Assistant:**%s\n' "$p" "$reply"
  done
done
