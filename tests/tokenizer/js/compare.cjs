// Compares two files of JSON id arrays line by line; prints the figures and the first few
// mismatches (with the input string) and exits 1 if any line differs.
//   node compare.cjs LABEL CORPUS_JSONL OURS_JSONL THEIRS_JSONL
'use strict';
const fs = require('fs');
const [label, corpusPath, oursPath, theirsPath] = process.argv.slice(2);
const lines = (p) => fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.length > 0);
const corpus = lines(corpusPath);
const ours = lines(oursPath);
const theirs = lines(theirsPath);
if (ours.length !== corpus.length || theirs.length !== corpus.length) {
  console.log(`${label}: line counts differ: corpus ${corpus.length}, ours ${ours.length}, ` +
              `theirs ${theirs.length}`);
  process.exit(1);
}
let mismatches = 0;
let tokens = 0;
for (let i = 0; i < corpus.length; ++i) {
  tokens += JSON.parse(theirs[i]).length;
  if (ours[i] === theirs[i]) continue;
  if (++mismatches <= 5) {
    console.log(`${label}: mismatch on line ${i + 1}: input ${corpus[i]}`);
    console.log(`  ours   ${ours[i]}`);
    console.log(`  theirs ${theirs[i]}`);
  }
}
console.log(`${label}: ${corpus.length} strings compared, ${tokens} tokens, ${mismatches} mismatches`);
process.exit(mismatches === 0 ? 0 : 1);
