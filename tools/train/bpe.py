#!/usr/bin/env python3
"""Byte-level BPE: trains merges and writes a Hugging Face tokenizer.json; encodes text.

The layout follows GPT-2/GPT-NeoX byte-level BPE (NFC normaliser, ByteLevel pre-tokenizer with
the GPT-2 split regex, ByteLevel decoder) so that xlstmd's tokenizer loads it unchanged:
id 0 is <|endoftext|> (BOS and end of reply), ids 1..256 the 256 bytes, then one id per merge.

    bpe.py train --data train.jsonl --merges 4159 --out tokenizer.json
"""
import argparse
import heapq
import json
import sys
import unicodedata

import regex

SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
EOT = "<|endoftext|>"


def byte_to_unicode():
    """GPT-2's reversible map from bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


B2U = byte_to_unicode()


def pieces(text):
    """NFC, then the GPT-2 split, each piece as its byte-level string."""
    text = unicodedata.normalize("NFC", text)
    return ["".join(B2U[b] for b in p.encode("utf-8")) for p in SPLIT.findall(text)]


def training_texts(path):
    """The strings the model will see, laid out as the chat template lays them out."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for line in lines:
        p = json.loads(line)
        yield f"User: {p['q']}\nAssistant:"
        yield " " + p["a"]
        yield "\n"


def train(texts, n_merges):
    counts = {}
    for t in texts:
        for p in pieces(t):
            counts[p] = counts.get(p, 0) + 1
    alphabet = [B2U[b] for b in range(256)]
    sym_id = {s: i for i, s in enumerate(alphabet)}
    symbols = list(alphabet)
    words = [[sym_id[c] for c in w] for w in counts]
    freq = list(counts.values())
    pair_count, where = {}, {}
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] = pair_count.get((a, b), 0) + freq[wi]
            where.setdefault((a, b), set()).add(wi)
    # Max-heap with lazy invalidation: stale entries are skipped when popped. Ties break on
    # the pair's symbol strings so that training is deterministic.
    heap = [(-c, symbols[a], symbols[b], a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negc, _, _, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -negc or negc == 0:
            continue
        new = len(symbols)
        symbols.append(symbols[a] + symbols[b])
        merges.append((symbols[a], symbols[b]))
        changed = {}
        for wi in where.pop((a, b), ()):
            w, f = words[wi], freq[wi]
            for x, y in zip(w, w[1:]):
                changed[(x, y)] = changed.get((x, y), 0) - f
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for x, y in zip(out, out[1:]):
                changed[(x, y)] = changed.get((x, y), 0) + f
                where.setdefault((x, y), set()).add(wi)
        for pair, delta in changed.items():
            if delta == 0:
                continue
            c = pair_count.get(pair, 0) + delta
            pair_count[pair] = c
            if c > 0:
                heapq.heappush(heap, (-c, symbols[pair[0]], symbols[pair[1]], pair[0], pair[1]))
        pair_count.pop((a, b), None)
    return merges


def tokenizer_json(merges):
    vocab = {EOT: 0}
    for b in range(256):
        vocab[B2U[b]] = 1 + b
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": EOT, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


class Encoder:
    """Encodes text with a tokenizer.json written by this file (no special tokens inside)."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
        self.vocab = t["model"]["vocab"]
        self.rank = {tuple(m.split(" ")): i for i, m in enumerate(t["model"]["merges"])}
        self.inv = {i: s for s, i in self.vocab.items()}
        self.u2b = {u: b for b, u in B2U.items()}
        self.cache = {}

    def _word(self, w):
        got = self.cache.get(w)
        if got is not None:
            return got
        parts = list(w)
        while len(parts) > 1:
            best, at = None, -1
            for i in range(len(parts) - 1):
                r = self.rank.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            parts[at: at + 2] = [parts[at] + parts[at + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[w] = ids
        return ids

    def encode(self, text):
        out = []
        for p in pieces(text):
            out.extend(self._word(p))
        return out

    def decode(self, ids):
        data = bytearray()
        for i in ids:
            if i == 0:
                data.extend(EOT.encode())
            else:
                data.extend(self.u2b[c] for c in self.inv[i])
        return data.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--merges", type=int, default=4159)
    t.add_argument("--out", required=True)
    args = ap.parse_args()
    merges = train(training_texts(args.data), args.merges)
    if len(merges) < args.merges:
        sys.exit(f"bpe: only {len(merges)} merges possible on {args.data}")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(merges), f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(f"bpe: {len(merges)} merges, vocabulary {len(merges) + 257} -> {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
