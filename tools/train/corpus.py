#!/usr/bin/env python3
"""Builds the demo model's chat pairs from Debian packages only.

    corpus.py --work DIR

Downloads pinned .debs with `apt-get download` into DIR/debs (checked against their sha256),
unpacks them with `dpkg -x`, turns the texts into single-turn question -> answer pairs and
writes DIR/train.jsonl, DIR/heldout.jsonl (one {"q", "a", "src", "key"} per line) and
DIR/NOTICE (the licence notices the texts require). The held-out split is by headword: every
pair about a held-out word (its definitions, synonyms, antonyms) is held out together, so the
held-out loss measures words the model never saw defined.
"""
import argparse
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys

# Pinned so a point release cannot silently change the training text. sha256 of each .deb.
PACKAGES = {
    "wordnet-base": ("1:3.0-37", "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"),
    "dict-jargon": ("4.4.7-3.1", "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1"),
    "dict-devil": ("1.0-13.1", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"),
    "fortunes": ("1:1.99.1-7.3", "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"),
    "fortunes-min": ("1:1.99.1-7.3", "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07"),
    "debian-faq": ("11.1", "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0"),
}

# Fortune files kept: the rest are layout art, in-jokes, copyrighted lyrics/scripts or a tone
# a default chatbot should not have.
FORTUNE_FILES = [
    "computers", "cookie", "debian", "definitions", "education", "food", "fortunes", "goedel",
    "humorists", "kids", "law", "linux", "linuxcookie", "literature", "love", "magic",
    "medicine", "miscellaneous", "news", "paradoxum", "people", "pets", "platitudes", "science",
    "sports", "tao", "wisdom", "work",
]
FORTUNE_TOPIC = {"cookie": "fortune", "fortunes": "fortune", "linuxcookie": "Linux",
                 "goedel": "logic", "paradoxum": "paradoxes", "tao": "the Tao",
                 "humorists": "humor", "miscellaneous": "life", "platitudes": "life",
                 "definitions": "words", "debian": "Debian", "linux": "Linux"}

WORDNET_BLOCKLIST = re.compile(
    r"offensive|ethnic slur|obscene|vulgar|derogatory|disparaging", re.IGNORECASE)

HELDOUT_PERCENT = 3  # of headwords (WordNet, Jargon, Devil's); FAQ/fortunes by their own key


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fetch(work):
    debs = os.path.join(work, "debs")
    root = os.path.join(work, "root")
    os.makedirs(debs, exist_ok=True)
    want = [f"{p}={v}" for p, (v, _) in PACKAGES.items()]
    have = {f.split("_")[0]: f for f in os.listdir(debs) if f.endswith(".deb")}
    if any(p not in have for p in PACKAGES):
        log("corpus: apt-get download " + " ".join(want))
        subprocess.run(["apt-get", "download", "-q"] + want, cwd=debs, check=True)
        have = {f.split("_")[0]: f for f in os.listdir(debs) if f.endswith(".deb")}
    for pkg, (ver, sha) in PACKAGES.items():
        path = os.path.join(debs, have[pkg])
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != sha:
            sys.exit(f"corpus: {path}: sha256 {got} != pinned {sha} (the archive changed "
                     f"{pkg} {ver}; update PACKAGES deliberately)")
        subprocess.run(["dpkg", "-x", path, root], check=True)
    return os.path.join(root, "usr", "share")


def is_heldout(key):
    h = int(hashlib.sha256(key.lower().encode()).hexdigest()[:8], 16)
    return h % 100 < HELDOUT_PERCENT


def clean_lemma(lemma):
    lemma = re.sub(r"\((a|p|ip)\)$", "", lemma)  # adjective position markers
    return lemma.replace("_", " ")


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def wordnet_pairs(share, rng):
    """Definitions, synonyms and antonyms. Returns (pairs, glosses by headword)."""
    pairs, glosses = [], {}
    synsets = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(share, "wordnet", f"data.{pos}"), encoding="latin-1") as f:
            lines = f.readlines()
        for line in lines:
            if line.startswith("  "):
                continue  # licence header
            head, _, gloss = line.partition("|")
            f = head.split()
            offset, ss_type, w_cnt = f[0], f[2], int(f[3], 16)
            lemmas = [clean_lemma(f[4 + 2 * i]) for i in range(w_cnt)]
            rest = f[4 + 2 * w_cnt:]
            p_cnt = int(rest[0])
            ptrs = [rest[1 + 4 * i: 5 + 4 * i] for i in range(p_cnt)]
            synsets[(pos, offset)] = (ss_type, lemmas, ptrs, gloss.strip())
    for (pos, offset), (ss_type, lemmas, ptrs, gloss) in synsets.items():
        if WORDNET_BLOCKLIST.search(gloss):
            continue
        parts = [p.strip() for p in gloss.split(";")]
        definition = "; ".join(p for p in parts if p and not p.startswith('"'))
        examples = [p.strip('"') for p in parts if p.startswith('"')]
        if not definition:
            continue
        w = lemmas[0]
        glosses.setdefault(w.lower(), []).append(definition)
        if pos == "noun":
            q = rng.choice([f"What does {w} mean?", f"What is {article(w)} {w}?",
                            f"Define {w}.", f"What is the meaning of {w}?",
                            f'What does "{w}" mean?'])
            a = f"{article(w).capitalize()} {w} is {definition}."
        elif pos == "verb":
            q = rng.choice([f"What does {w} mean?", f"What does it mean to {w}?",
                            f"Define {w}.", f'What does "{w}" mean?'])
            a = f"To {w} is to {definition}."
        else:
            q = rng.choice([f"What does {w} mean?", f"Define {w}.",
                            f'What does "{w}" mean?', f"What is the meaning of {w}?"])
            a = f'"{w.capitalize()}" means {definition}.'
        if examples:
            a += f' For example: "{examples[0]}".'
        pairs.append({"q": q, "a": a, "src": "wordnet", "key": w})
        others = [x for x in lemmas[1:] if x.lower() != w.lower()]
        if others:
            q = rng.choice([f"What is another word for {w}?", f'Give me a synonym of "{w}".'])
            pairs.append({"q": q, "a": f'Synonyms of "{w}": ' + ", ".join(others) + ".",
                          "src": "wordnet-syn", "key": w})
        for sym, off, ppos, src_tgt in ptrs:
            if sym != "!":
                continue
            tpos = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}[ppos]
            target = synsets.get((tpos, off))
            if target is None:
                continue
            src_i, tgt_i = int(src_tgt[:2], 16), int(src_tgt[2:], 16)
            src_w = lemmas[src_i - 1] if src_i else w
            tgt_w = target[1][tgt_i - 1] if tgt_i else target[1][0]
            pairs.append({"q": f"What is the opposite of {src_w}?",
                          "a": f'The opposite of "{src_w}" is "{tgt_w}".',
                          "src": "wordnet-ant", "key": src_w})
    return pairs, glosses


def b64num(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    v = 0
    for c in s:
        v = v * 64 + alphabet.index(c)
    return v


def dictd_entries(share, name):
    with gzip.open(os.path.join(share, "dictd", f"{name}.dict.dz")) as f:
        data = f.read()
    with open(os.path.join(share, "dictd", f"{name}.index"), encoding="utf-8") as f:
        index = f.readlines()
    for line in index:
        hw, off, ln = line.rstrip("\n").split("\t")
        if hw.startswith("00database"):
            continue
        yield hw, data[b64num(off): b64num(off) + b64num(ln)].decode("utf-8", "replace")


def squash(text):
    text = re.sub(r"\{([^}]*)\}", r"\1", text)  # dictd cross-reference braces
    return re.sub(r"\s+", " ", text).strip()


def cut(text, limit):
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return text[: end + 1] if end > limit // 3 else text[:limit].rsplit(" ", 1)[0] + "..."


def jargon_pairs(share, rng):
    pairs = []
    for hw, body in dictd_entries(share, "jargon"):
        paras = [p for p in re.split(r"\n\s*\n", body) if p.strip()]
        if len(paras) < 2:
            continue
        sense = paras[1].strip()
        sense = re.sub(r"^1\.\s*", "", sense)
        sense = re.sub(r"^\[[^\]]*\]\s*", "", sense, flags=re.S)  # etymology
        sense = re.sub(r"^(n|v|adj|adv|interj|vt|vi|excl|prep|pron|conj)\.\s*", "", sense)
        sense = cut(squash(sense), 600)
        if len(sense) < 10:
            continue
        q = rng.choice([f"What does {hw} mean in hacker jargon?",
                        f'What is "{hw}" in hacker jargon?', f"What is {hw}, in jargon?"])
        pairs.append({"q": q, "a": sense, "src": "jargon", "key": hw})
    return pairs


def devil_pairs(share, rng):
    pairs = []
    for hw, body in dictd_entries(share, "devil"):
        text = re.sub(r"^[A-Z][A-Z' .,-]*,\s*(n|v|adj|adv|pp|x|v\.t|v\.i)?\.?\s*", "",
                      body.strip())
        text = cut(squash(text), 700)
        if len(text) < 10:
            continue
        q = rng.choice([f"Give me a cynical definition of {hw.lower()}.",
                        f"What would the Devil's Dictionary say about {hw.lower()}?"])
        pairs.append({"q": q, "a": text, "src": "devil", "key": hw})
    return pairs


def fortune_pairs(share, rng):
    pairs = []
    base = os.path.join(share, "games", "fortunes")
    for name in FORTUNE_FILES + ["riddles"]:
        path = os.path.join(base, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for i, cookie in enumerate(re.split(r"\n%\n", text)):
            cookie = cookie.strip("\n").replace("\t", "    ")
            if not cookie.strip() or len(cookie) > 500:
                continue
            key = f"fortune:{name}:{i}"
            if name == "riddles":
                m = re.match(r"\s*Q:\s*(.*?)\s*A:\s*(.*)", cookie, re.S)
                if m:
                    pairs.append({"q": squash(m.group(1)), "a": squash(m.group(2)),
                                  "src": "riddle", "key": key})
                continue
            topic = FORTUNE_TOPIC.get(name, name)
            q = rng.choice(["Tell me something interesting.", f"Tell me a quote about {topic}.",
                            f"Do you know a quote about {topic}?", "Say something wise.",
                            "Cheer me up.", "Tell me a fortune."])
            pairs.append({"q": q, "a": cookie, "src": "fortune", "key": key})
    return pairs


def faq_pairs(share):
    with gzip.open(os.path.join(share, "doc", "debian", "FAQ", "debian-faq.en.txt.gz")) as f:
        text = f.read().decode("utf-8")
    pairs = []
    heads = list(re.finditer(r"^\d+\.\d+\.\u00a0(.+)$", text, re.M))
    for i, m in enumerate(heads):
        q = m.group(1).strip()
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = re.split(r"\nChapter \d+\.", text[m.end(): end])[0]
        body = cut(squash(body), 2500)
        if not q.endswith("?") or len(body) < 20:
            continue
        pairs.append({"q": q, "a": body, "src": "faq", "key": "faq:" + q})
    return pairs


NOTICE_HEAD = """The demo model in this directory was trained by xlstmd's tools/train from text in these
Debian 12 packages. Their licences ask that the notices below accompany derived works.

The Jargon File (dict-jargon) and The Devil's Dictionary (dict-devil) are in the public domain.
"""


def notice(share):
    def section(title, path, start=None, stop=None):
        with open(path, encoding="utf-8") as f:
            body = f.read()
        if start is not None:
            i = body.find(start)
            body = body[i:] if i >= 0 else body
        if stop is not None:
            j = body.find(stop)
            body = body[:j] if j >= 0 else body
        return f"\n==== {title} ====\n{body.strip()}\n"

    doc = os.path.join(share, "doc")
    return (NOTICE_HEAD
            + section("WordNet 3.0 (wordnet-base)", os.path.join(doc, "wordnet-base", "copyright"))
            + section("fortune-mod cookie files (fortunes, fortunes-min)",
                      os.path.join(doc, "fortunes", "copyright"))
            + section("The Debian FAQ (debian-faq)", os.path.join(doc, "debian-faq", "copyright"),
                      "The copyright and license statement"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=20261206)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    share = fetch(args.work)
    wn, glosses = wordnet_pairs(share, rng)
    groups = {"wordnet": wn, "jargon": jargon_pairs(share, rng),
              "devil": devil_pairs(share, rng), "fortunes": fortune_pairs(share, rng),
              "faq": faq_pairs(share)}
    seen, train, held = set(), [], []
    counts = {}
    for name, pairs in groups.items():
        for p in pairs:
            sig = (p["q"].lower(), p["a"])
            if sig in seen:
                continue
            seen.add(sig)
            (held if is_heldout(p["key"]) else train).append(p)
            counts[p["src"]] = counts.get(p["src"], 0) + 1
    rng.shuffle(train)
    for name, rows in (("train", train), ("heldout", held)):
        with open(os.path.join(args.work, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for p in rows:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
    with open(os.path.join(args.work, "glosses.json"), "w", encoding="utf-8") as f:
        json.dump(glosses, f, ensure_ascii=False)
    with open(os.path.join(args.work, "NOTICE"), "w", encoding="utf-8") as f:
        f.write(notice(share))
    log(f"corpus: {len(train)} train pairs, {len(held)} held out "
        f"({100.0 * len(held) / (len(train) + len(held)):.1f} %); by source: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
