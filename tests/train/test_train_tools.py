#!/usr/bin/env python3
"""Unit tests of tools/train's data side (no PyTorch needed): the corpus parsers on small
synthetic inputs in the packages' formats, the held-out split, and the BPE trainer, whose
tokenizer.json must encode exactly as xlstmd's tokenizer does (`xlstm tokenize`).

    test_train_tools.py --bin-dir build/bin
"""
import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import bpe  # noqa: E402
import corpus  # noqa: E402

BIN_DIR = os.path.join(ROOT, "build", "bin")

WORDNET_NOUN = (
    "  1 This software and database is being provided to you, the LICENSEE, by\n"
    "00001740 03 n 02 dwarf 0 midget 0 001 @ 00004475 n 0000 | a plant or animal that is "
    "atypically small; \"the dwarf grew\"\n"
    "00001800 03 n 01 slur 0 000 | a disparaging remark\n"
    "00001900 03 n 01 dryness 0 001 ! 00002000 n 0101 | the condition of not containing "
    "water\n"
    "00002000 03 n 01 wetness 0 001 ! 00001900 n 0101 | wet condition\n"
)
WORDNET_VERB = "00003000 29 v 01 run 0 000 | move fast by using one's feet\n"


def b64num(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if n == 0:
            return out


def write_dictd(folder, name, entries):
    data, index = b"", []
    for hw, body in entries:
        raw = body.encode()
        index.append(f"{hw}\t{b64num(len(data))}\t{b64num(len(raw))}\n")
        data += raw
    with gzip.open(os.path.join(folder, f"{name}.dict.dz"), "wb") as f:
        f.write(data)
    with open(os.path.join(folder, f"{name}.index"), "w") as f:
        f.write("00databaseinfo\tA\tB\n" + "".join(index))


class CorpusTest(unittest.TestCase):
    def setUp(self):
        self.share = tempfile.mkdtemp(prefix="xlstmd-corpus-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.share])
        for sub in ("wordnet", "dictd", "games/fortunes", "doc/debian/FAQ"):
            os.makedirs(os.path.join(self.share, sub))
        for pos, text in (("noun", WORDNET_NOUN), ("verb", WORDNET_VERB), ("adj", ""),
                          ("adv", "")):
            with open(os.path.join(self.share, "wordnet", f"data.{pos}"), "w") as f:
                f.write(text)

    def test_wordnet_definitions_synonyms_antonyms_and_blocklist(self):
        pairs, glosses = corpus.wordnet_pairs(self.share, random.Random(1))
        by_src = {}
        for p in pairs:
            by_src.setdefault(p["src"], []).append(p)
        answers = [p["a"] for p in by_src["wordnet"]]
        self.assertIn('A dwarf is a plant or animal that is atypically small. For example: '
                      '"the dwarf grew".', answers)
        self.assertIn("To run is to move fast by using one's feet.", answers)
        self.assertFalse(any("slur" in a for a in answers), "offensive glosses are dropped")
        self.assertEqual(by_src["wordnet-syn"][0]["a"], 'Synonyms of "dwarf": midget.')
        self.assertIn('The opposite of "dryness" is "wetness".',
                      [p["a"] for p in by_src["wordnet-ant"]])
        self.assertEqual(glosses["dwarf"], ["a plant or animal that is atypically small"])

    def test_jargon_and_devil_entries(self):
        d = os.path.join(self.share, "dictd")
        write_dictd(d, "jargon", [("foo", "foo\n /foo/\n\n    1. [from FOO] n. A sample {metasyntactic"
                                          " variable}.\n\n    2. Another sense.\n")])
        write_dictd(d, "devil", [("LAWYER", "LAWYER, n.  One skilled in circumvention of "
                                            "the law.\n\n")])
        j = corpus.jargon_pairs(self.share, random.Random(1))
        self.assertEqual(j[0]["a"], "A sample metasyntactic variable.")
        dv = corpus.devil_pairs(self.share, random.Random(1))
        self.assertEqual(dv[0]["a"], "One skilled in circumvention of the law.")
        self.assertIn("lawyer", dv[0]["q"])

    def test_fortunes_and_riddles(self):
        base = os.path.join(self.share, "games", "fortunes")
        with open(os.path.join(base, "science"), "w") as f:
            f.write("Science is organized knowledge.\n\t-- Spencer\n%\n" + "x" * 600 + "\n%\n")
        with open(os.path.join(base, "riddles"), "w") as f:
            f.write("Q:\tWhat is black and white?\nA:\tA newspaper.\n%\n")
        pairs = corpus.fortune_pairs(self.share, random.Random(1))
        fort = [p for p in pairs if p["src"] == "fortune"]
        self.assertEqual(len(fort), 1, "cookies over 500 characters are dropped")
        self.assertEqual(fort[0]["a"], "Science is organized knowledge.\n    -- Spencer")
        riddle = [p for p in pairs if p["src"] == "riddle"][0]
        self.assertEqual((riddle["q"], riddle["a"]), ("What is black and white?", "A newspaper."))

    def test_faq_headings_are_questions(self):
        text = ("Contents\n1.1. What is this FAQ? (table of contents)\n\n"
                "Chapter 1. Definitions\n\n1.1.\u00a0What is this FAQ?\n\n    It answers "
                "questions about Debian.\n\n1.2.\u00a0Conventions\n\n    Not a question.\n")
        with gzip.open(os.path.join(self.share, "doc", "debian", "FAQ",
                                    "debian-faq.en.txt.gz"), "wb") as f:
            f.write(text.encode())
        pairs = corpus.faq_pairs(self.share)
        self.assertEqual([(p["q"], p["a"]) for p in pairs],
                         [("What is this FAQ?", "It answers questions about Debian.")])

    def test_heldout_split_is_by_headword(self):
        keys = [f"word{i}" for i in range(3000)]
        held = [k for k in keys if corpus.is_heldout(k)]
        self.assertGreater(len(held), 3000 * 0.02)
        self.assertLess(len(held), 3000 * 0.05)
        for k in held[:20]:  # every spelling of a held-out headword stays held out
            self.assertTrue(corpus.is_heldout(k.upper()))


class BpeTest(unittest.TestCase):
    TEXTS = ["User: What does serendipity mean?\nAssistant:",
             " Serendipity is good luck in making unexpected discoveries.",
             " The quick brown fox jumps over the lazy dog 12345 times!",
             " Caf\u00e9 na\u00efve \u00fcber \u65e5\u672c\u8a9e emoji \U0001f600 tabs\tand  spaces",
             " it's they're we'll I'd", "\n"] * 20

    def train(self, merges=200):
        tmp = tempfile.mkdtemp(prefix="xlstmd-bpe-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        path = os.path.join(tmp, "tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(bpe.tokenizer_json(bpe.train(self.TEXTS, merges)), f, ensure_ascii=False)
        return path

    def test_deterministic_and_sized(self):
        a = bpe.train(self.TEXTS, 150)
        self.assertEqual(a, bpe.train(self.TEXTS, 150))
        self.assertEqual(len(a), 150)
        t = bpe.tokenizer_json(a)
        self.assertEqual(t["model"]["vocab"]["<|endoftext|>"], 0)
        self.assertEqual(len(t["model"]["vocab"]), 257 + 150)

    def test_python_encoder_round_trips(self):
        enc = bpe.Encoder(self.train())
        for text in set(self.TEXTS) | {"never seen: \u0416\u0436 \u00e9\u0301"}:
            ids = enc.encode(text)
            self.assertEqual(enc.decode(ids), __import__("unicodedata").normalize("NFC", text))
        self.assertLess(len(enc.encode(self.TEXTS[1])), len(self.TEXTS[1].encode()) / 2)

    def test_runtime_tokenizer_encodes_identically(self):
        path = self.train()
        enc = bpe.Encoder(path)
        texts = sorted(set(self.TEXTS)) + ["unseen words: xylophone quixotic 987", "  \n\n  x"]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        self.addCleanup(os.unlink, f.name)
        out = subprocess.run([os.path.join(BIN_DIR, "xlstm"), "tokenize", "--tokenizer", path,
                              "--jsonl", f.name], check=True, capture_output=True, text=True)
        got = [json.loads(line) for line in out.stdout.splitlines()]
        self.assertEqual(got, [enc.encode(t) for t in texts])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--bin-dir", default=BIN_DIR)
    args, rest = ap.parse_known_args()
    BIN_DIR = os.path.abspath(args.bin_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
