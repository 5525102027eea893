#!/usr/bin/env bash
# Tokenizer benchmark (not a test): single-threaded encode throughput of ours and of the npm
# package @huggingface/tokenizers on the same ~10 MB mixed corpus (prose, code, and every
# differential-test category), in one run, plus each one's load time of the tokenizer file.
#   tests/tokenizer/bench.sh [BUILD_DIR] [SHARED_DIR] [TOTAL_BYTES]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:-$HERE/../../build}" && pwd)
SHARED=${2:-$HERE/../../../shared}
TOTAL=${3:-10000000}
TOK=$SHARED/tokenizers/gpt-neox-20b/tokenizer.json
NPM_PREFIX=$BUILD/npm-cache
if [ ! -f "$NPM_PREFIX/node_modules/@huggingface/tokenizers/package.json" ]; then
  npm install --prefix "$NPM_PREFIX" @huggingface/tokenizers@0.2.0 --no-audit --no-fund \
    --loglevel=error >/dev/null
fi
WORK=$BUILD/tokenizer-bench
mkdir -p "$WORK"
"$BUILD/bin/tokenizer_corpus_gen" --total-bytes "$TOTAL" --doc-bytes 4000 --seed 99 \
  >"$WORK/corpus.jsonl"
"$BUILD/bin/xlstm" tokenize --tokenizer "$TOK" --jsonl "$WORK/corpus.jsonl" --bench
"$BUILD/bin/xlstm" tokenize --tokenizer "$TOK" --jsonl "$WORK/corpus.jsonl" --bench --no-cache
node "$HERE/js/hf_encode.cjs" "$NPM_PREFIX" "$TOK" "$WORK/corpus.jsonl" --bench

# Pathological inputs (one unit repeated) must encode in time linear in their length: each
# unit at 256 KiB and at 1 MiB, and the ratio of the two times (4 = linear). This is where the
# linearity check lives; tests check the round trip on the same inputs, not their timing.
python3 - "$BUILD/bin/xlstm" "$TOK" "$WORK" <<'PY'
import json, subprocess, sys
xlstm, tok, work = sys.argv[1:4]
units = ["a", " ", "\n", "\t", "7", "!", "\u00e9", "\u65e5", "\U0001F600", "ab", " a", "<|",
         "e\u0301"]
def seconds(text):
    path = f"{work}/pathological.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps(text) + "\n")
    out = subprocess.run([xlstm, "tokenize", "--tokenizer", tok, "--jsonl", path, "--bench"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["seconds"]
for u in units:
    small = seconds(u * (262144 // len(u.encode())))
    large = seconds(u * (1048576 // len(u.encode())))
    print(json.dumps({"pathological_unit": u, "seconds_256k": small, "seconds_1m": large,
                      "ratio": round(large / small, 2) if small > 0 else None}))
PY
