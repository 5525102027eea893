// Writes a second tokenizer.json derived from GPT-NeoX's that exercises the other supported
// components against the reference: merges as ["a", "b"] pairs (tokenizers >= 0.20 format),
// a Split pre-tokenizer with the Llama-3 regex (case-insensitive group, \p{N}{1,3}, \s*[\r\n]+)
// followed by ByteLevel without its regex, NFC wrapped in a normalizer Sequence, and
// lstrip/rstrip on <|padding|>. (A null normalizer is not used here: the reference then
// matches normalized added tokens in raw text, unlike Rust `tokenizers`, which changes how
// lstrip/rstrip interact with NeoX's space-run tokens.)
//   node make_variant.cjs NEOX_TOKENIZER_JSON OUT_JSON
'use strict';
const fs = require('fs');
const [src, dst] = process.argv.slice(2);
const t = JSON.parse(fs.readFileSync(src, 'utf8'));
t.model.merges = t.model.merges.map((m) => (Array.isArray(m) ? m : m.split(' ')));
t.normalizer = { type: 'Sequence', normalizers: [t.normalizer] };
t.pre_tokenizer = {
  type: 'Sequence',
  pretokenizers: [
    {
      type: 'Split',
      pattern: {
        Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      },
      behavior: 'Isolated',
      invert: false,
    },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};
for (const a of t.added_tokens) {
  if (a.content === '<|padding|>') {
    a.lstrip = true;
    a.rstrip = true;
  }
}
fs.writeFileSync(dst, JSON.stringify(t));
