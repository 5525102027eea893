// Reference encoder for the differential test and the benchmark: the npm package
// @huggingface/tokenizers (pure JS), loading a tokenizer.json offline.
//   node hf_encode.cjs NPM_PREFIX TOKENIZER_JSON CORPUS_JSONL           ids, one JSON array a line
//   node hf_encode.cjs NPM_PREFIX TOKENIZER_JSON CORPUS_JSONL --bench   one JSON line of timings
'use strict';
const fs = require('fs');
const path = require('path');

const [prefix, tokenizerPath, corpusPath, mode] = process.argv.slice(2);
const { Tokenizer } = require(path.join(prefix, 'node_modules', '@huggingface', 'tokenizers'));

const loadStart = process.hrtime.bigint();
const tokenizer = new Tokenizer(JSON.parse(fs.readFileSync(tokenizerPath, 'utf8')), {});
const loadMs = Number(process.hrtime.bigint() - loadStart) / 1e6;

const texts = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0)
    .map((l) => JSON.parse(l));
// add_special_tokens: false so that no post-processor ids are added (ours adds none either).
const encode = (t) => tokenizer.encode(t, { add_special_tokens: false }).ids;

if (mode === '--bench') {
  let bytes = 0;
  let tokens = 0;
  for (const t of texts) bytes += Buffer.byteLength(t, 'utf8');
  const start = process.hrtime.bigint();
  for (const t of texts) tokens += encode(t).length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({
    impl: '@huggingface/tokenizers', load_ms: Number(loadMs.toFixed(1)), texts: texts.length,
    bytes, tokens, seconds: Number(seconds.toFixed(3)),
    mb_per_s: Number((bytes / 1e6 / seconds).toFixed(2)),
  }));
} else {
  const out = [];
  for (const t of texts) out.push(JSON.stringify(encode(t)));
  fs.writeSync(1, out.join('\n') + '\n');
}
