#!/usr/bin/env bash
# Differential test of our tokenizer against the npm package @huggingface/tokenizers (an
# independent, pure-JS implementation of tokenizer.json) on generated strings:
# GPT-NeoX-20B's file as shipped, a variant with Split/Sequence and pair-format merges, and the
# bundled demo model's own BPE (models/demo, trained by tools/train/bpe.py).
# Identical ids are required on every string. Missing node/npm or tokenizer file = FAIL.
#   differential_test.sh BUILD_DIR SHARED_DIR [COUNT]
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SHARED=$2
COUNT=${3:-12000}
HERE=$(cd "$(dirname "$0")" && pwd)
TOK=$SHARED/tokenizers/gpt-neox-20b/tokenizer.json
DEMO_TOK=$HERE/../../models/demo/tokenizer.json

fail() { echo "FAIL: $*"; exit 1; }
[ -f "$TOK" ] || fail "missing $TOK"
[ -f "$DEMO_TOK" ] || fail "missing $DEMO_TOK"
command -v node >/dev/null || fail "node not found (scripts/bootstrap.sh installs nodejs)"
command -v npm >/dev/null || fail "npm not found (scripts/bootstrap.sh installs npm)"
[ -x "$BUILD/bin/xlstm" ] || fail "missing $BUILD/bin/xlstm (build it first)"
[ -x "$BUILD/bin/tokenizer_corpus_gen" ] || fail "missing $BUILD/bin/tokenizer_corpus_gen"

# The reference lives in the build tree, never in the repository.
NPM_PREFIX=$BUILD/npm-cache
if [ ! -f "$NPM_PREFIX/node_modules/@huggingface/tokenizers/package.json" ]; then
  npm install --prefix "$NPM_PREFIX" @huggingface/tokenizers@0.2.0 --no-audit --no-fund \
    --loglevel=error >/dev/null || fail "npm install @huggingface/tokenizers failed"
fi

WORK=$BUILD/tokenizer-differential
mkdir -p "$WORK"
"$BUILD/bin/tokenizer_corpus_gen" --count "$COUNT" --seed "${SEED:-20240601}" >"$WORK/corpus.jsonl"
node "$HERE/js/make_variant.cjs" "$TOK" "$WORK/variant.json"

status=0
for name in neox variant demo; do
  file=$TOK
  [ "$name" = variant ] && file=$WORK/variant.json
  [ "$name" = demo ] && file=$DEMO_TOK
  "$BUILD/bin/xlstm" tokenize --tokenizer "$file" --jsonl "$WORK/corpus.jsonl" \
    >"$WORK/ours_$name.jsonl"
  node "$HERE/js/hf_encode.cjs" "$NPM_PREFIX" "$file" "$WORK/corpus.jsonl" \
    >"$WORK/theirs_$name.jsonl"
  node "$HERE/js/compare.cjs" "$name" "$WORK/corpus.jsonl" "$WORK/ours_$name.jsonl" \
    "$WORK/theirs_$name.jsonl" || status=1
done
exit $status
