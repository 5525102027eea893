#!/usr/bin/env python3
"""The docs match the programs, and this test keeps them so.

- every flag `xlstmd --help` prints has a row in docs/server.md's option tables with the same
  default, and every row there is a flag the daemon has;
- every old daemon flag name in docs/server.md's renames table still works, with a warning
  naming the new one;
- every flag of every `xlstm` subcommand is named in docs/ or the README (`--flag`), and
  docs/tools.md's mkmodel table lists exactly mkmodel's flags with their defaults;
- the README's layout table lists only folders that exist, and every top-level folder of the
  repository that holds code is in it.

    test_docs_match.py --bin-dir build/bin
"""
import argparse
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.join(ROOT, "build", "bin")

FLAG_LINE = re.compile(r"^  (--[a-z0-9-]+)(?: (\S+))?\s+(.*)$")


def help_flags(cmd):
    """{flag: default or None} from a --help text."""
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    flags = {}
    for line in out.splitlines():
        m = FLAG_LINE.match(line)
        if not m or m.group(1) == "--help":
            continue
        d = re.search(r"\(default ([^;)]*)", m.group(3))
        flags[m.group(1)] = d.group(1).strip() if d else None
    return flags


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def all_docs():
    texts = [read("README.md")]
    for name in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if name.endswith(".md"):
            texts.append(read(os.path.join("docs", name)))
    return "\n".join(texts)


def tables(path, header):
    """The rows of the tables in `path` whose header line starts with `header`."""
    rows, inside = [], False
    for line in read(path).splitlines():
        if line.startswith("|"):
            inside = inside or line.startswith(header)
            if inside:
                rows.append(line)
        else:
            inside = False
    return rows


def server_md_rows():
    """{flag: default cell} of docs/server.md's option tables."""
    rows = {}
    for line in tables("docs/server.md", "| flag | default |"):
        m = re.match(r"^\| (`--(?:[^|\\]|\\.)*) \| ((?:[^|\\]|\\.)*) \|", line)
        if m:
            # One row may hold a pair: `--tls-cert FILE` / `--tls-key FILE`.
            for flag in re.findall(r"`(--[a-z0-9-]+)", m.group(1)):
                rows[flag] = m.group(2).strip()
    return rows


def normalize(default):
    """A docs default cell or a help default, reduced to comparable text."""
    d = default.strip().strip("`")
    d = re.sub(r"`", "", d)
    d = re.split(r" \(| = |; ", d)[0]  # "4294967296 (4 GiB)" -> "4294967296"
    return {"none": "", "empty": "", "(none)": "", "-": "", "\"\"": ""}.get(d, d)


class DocsMatchTest(unittest.TestCase):
    maxDiff = None

    def test_every_daemon_flag_is_documented_with_its_default(self):
        flags = help_flags([os.path.join(BIN_DIR, "xlstmd")])
        rows = server_md_rows()
        self.assertGreater(len(flags), 30)
        missing = sorted(set(flags) - set(rows))
        self.assertEqual(missing, [], "flags in `xlstmd --help` without a row in docs/server.md")
        extra = sorted(set(rows) - set(flags))
        self.assertEqual(extra, [], "rows in docs/server.md for flags xlstmd does not have")
        wrong = []
        for flag, default in flags.items():
            if default is None:
                continue
            if normalize(rows[flag]) != normalize(default) and normalize(default) not in rows[flag]:
                wrong.append(f"{flag}: --help says {default!r}, docs/server.md says {rows[flag]!r}")
        self.assertEqual(wrong, [], "defaults that differ")

    def test_renamed_daemon_flags_still_work_and_warn(self):
        """Each old name in docs/server.md's renames table is accepted with a warning naming
        the new flag (a bad --listen then stops the start before any model is loaded)."""
        pairs = []
        for line in tables("docs/server.md", "| old | new |")[2:]:
            old_cell, new_cell = line.split("|")[1:3]
            olds = re.findall(r"`(--[a-z0-9-]+)", old_cell)
            news = re.findall(r"`(--[a-z0-9-]+)", new_cell)
            pairs += list(zip(olds, news))
        self.assertGreaterEqual(len(pairs), 11)
        flags = help_flags([os.path.join(BIN_DIR, "xlstmd")])
        for old, new in pairs:
            self.assertIn(new, flags, f"renames table: {new} is not a flag")
            self.assertNotIn(old, flags, f"renames table: {old} is still in --help")
            r = subprocess.run([os.path.join(BIN_DIR, "xlstmd"), old, "60", "--listen", "bad"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(f"warning: {old} is renamed {new}", r.stderr)

    def test_every_tool_flag_is_documented(self):
        xlstm = os.path.join(BIN_DIR, "xlstm")
        top = subprocess.run([xlstm, "--help"], capture_output=True, text=True, check=True).stdout
        commands = re.findall(r"^  ([a-z-]+)\s{2,}", top, re.M)
        self.assertIn("chat", commands)
        docs = all_docs()
        missing = []
        for cmd in commands:
            sub = [xlstm, cmd] + (["list"] if cmd == "sessions" else [])
            for flag in help_flags(sub):
                if not re.search(re.escape(flag) + r"\b", docs):
                    missing.append(f"xlstm {cmd} {flag}")
        self.assertEqual(missing, [], "tool flags no doc names")

    def test_mkmodel_table_matches_its_help(self):
        """docs/tools.md's mkmodel table names exactly mkmodel's flags, with their defaults."""
        flags = help_flags([os.path.join(BIN_DIR, "xlstm"), "mkmodel"])
        documented, wrong = set(), []
        for line in tables("docs/tools.md", "| flag | default |")[2:]:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            names = re.findall(r"`(--[a-z0-9-]+)", cells[0])
            defaults = re.findall(r"`([^`]*)`", cells[1].split(" (")[0])
            for i, name in enumerate(names):
                documented.add(name)
                want = flags.get(name)
                if name not in flags:
                    wrong.append(f"{name}: documented but not a flag of xlstm mkmodel")
                elif want is not None and not cells[1].startswith("required"):
                    doc = defaults[i] if len(defaults) == len(names) else (defaults or [""])[0]
                    if normalize(doc) != normalize(want):
                        wrong.append(f"{name}: --help says {want!r}, docs/tools.md says {doc!r}")
        missing = sorted(set(flags) - documented)
        self.assertEqual(missing, [], "xlstm mkmodel flags without a row in docs/tools.md")
        self.assertEqual(wrong, [], "docs/tools.md's mkmodel table")

    def test_readme_layout_lists_what_exists(self):
        readme = read("README.md")
        section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
        listed = set()
        for cell in re.findall(r"^\| ([^|]+) \|", section, re.M):
            for path in re.findall(r"`([^`]+)`", cell):
                listed.add(path.rstrip("/"))
                self.assertTrue(os.path.exists(os.path.join(ROOT, path)),
                                f"README layout lists {path}, which does not exist")
        for name in sorted(os.listdir(ROOT)):
            full = os.path.join(ROOT, name)
            if name.startswith(".") or name.startswith("build") or not os.path.isdir(full):
                continue
            if name in ("docs", "scripts", "cmake", "models"):
                continue  # named in prose: not code layers
            self.assertIn(name, listed, f"top-level folder {name}/ is not in the README layout")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--bin-dir", default=BIN_DIR)
    args, rest = ap.parse_known_args()
    BIN_DIR = os.path.abspath(args.bin_dir)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
