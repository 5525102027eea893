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
