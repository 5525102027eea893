#!/usr/bin/env python3
"""Every code block the docs mark ```sh runnable runs, as written, and exits 0.

Blocks run in document order (README.md, then docs/*.md by name), each as one bash script
with `set -euo pipefail`, in one scratch directory where `build/bin` and `models` point at the
real ones. A daemon serving the bundled demo model stands in for the one the docs assume:
`127.0.0.1:50051` in a block is replaced by its address, and `/tmp/` by the scratch directory,
so the examples stay copy-pasteable and the test never touches a real /tmp path or port.

    test_runnable_blocks.py --bin-dir build/bin --shared-dir ../shared
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e"))
import harness  # noqa: E402

ROOT = harness.REPO_ROOT
BLOCK = re.compile(r"^```sh runnable\n(.*?)^```", re.M | re.S)


def runnable_blocks():
    files = ["README.md"] + [os.path.join("docs", n)
                             for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
                             if n.endswith(".md")]
    for rel in files:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield f"{rel}:{line}", m.group(1)


class RunnableBlocksTest(harness.E2ETestCase):
    def test_every_runnable_block_runs(self):
        blocks = list(runnable_blocks())
        self.assertGreaterEqual(len(blocks), 4, "the docs lost their runnable examples")
        work = tempfile.mkdtemp(prefix="xlstmd-docs-")
        self.addCleanup(shutil.rmtree, work, True)
        os.makedirs(os.path.join(work, "build"))
        os.symlink(harness.CONFIG.bin_dir, os.path.join(work, "build", "bin"))
        os.symlink(os.path.join(ROOT, "models"), os.path.join(work, "models"))
        os.makedirs(os.path.join(work, "tmp"))
        d = self.start_daemon(["--keep-turn-checkpoints", "2"],
                              model_dir=os.path.join(ROOT, "models", "demo"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("XLSTMD_")}
        for where, body in blocks:
            script = body.replace("127.0.0.1:50051", d.address).replace("/tmp/", work + "/tmp/")
            p = subprocess.run(["/bin/bash", "-c", "set -euo pipefail\n" + script], cwd=work,
                               env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=120)
            self.assertEqual(p.returncode, 0,
                             f"{where}: the block failed (exit {p.returncode})\n--- block\n"
                             f"{body}--- stdout\n{p.stdout[-2000:]}\n--- stderr\n"
                             f"{p.stderr[-2000:]}")


if __name__ == "__main__":
    harness.main()
