#!/usr/bin/python3
"""A lint of the top-level Dockerfile and .dockerignore (no Docker engine here; the opt-in
scripts/image-test.sh builds and runs the image with podman):

- the base image is a build argument with a dated Debian 12 tag or a digest, never latest;
  every FROM names it or an earlier stage;
- VARIANT is cpu|cuda and anything else fails in the build's first step with one line;
- a numeric non-root USER, a HEALTHCHECK through `xlstm health`, exec-form ENTRYPOINT and
  HEALTHCHECK, the gRPC and metrics ports exposed, the XLSTMD_* listen defaults;
- no ADD (so no URLs), nothing secret-looking copied or set in the environment, and the
  context excludes .git, build trees and key files;
- the runtime stage installs only the derived package list; every package the built binaries
  need (scripts/runtime-packages.sh) is one bootstrap installed on this machine.

    test_dockerfile.py [--bin-dir build/bin]
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = None


def instructions(text):
    """(instruction, argument text) with line continuations joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def stages(ins):
    """Lists of instructions per stage, with the stage's FROM first."""
    result = []
    for i in ins:
        if i[0] == "FROM":
            result.append([i])
        elif result:
            result[-1].append(i)
    return result


class DockerfileTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            cls.ins = instructions(f.read())
        cls.stages = stages(cls.ins)
        cls.global_args = {}
        for word, rest in cls.ins:
            if word == "FROM":
                break
            if word == "ARG":
                k, _, v = rest.partition("=")
                cls.global_args[k] = v

    def test_base_image_is_pinned(self):
        base = self.global_args.get("BASE_IMAGE", "")
        self.assertRegex(base, r"^[\w./-]+(:bookworm-\d{8}(-slim)?|@sha256:[0-9a-f]{64})$")
        self.assertNotIn("latest", base)
        names = set()
        for st in self.stages:
            parts = st[0][1].split()
            image = parts[0]
            # No variable stage names: buildah resolves the target's FROM before running
            # anything, so VARIANT=bogus would fail there, unclearly, not in the check.
            if image != "${BASE_IMAGE}":
                self.assertIn(image, names, f"FROM {image}: not the base image or a stage")
            if len(parts) == 3 and parts[1].upper() == "AS":
                names.add(parts[2])
        self.assertEqual(self.stages[-1][0][1].split()[-1], "runtime")

    def test_variant_is_checked_first(self):
        self.assertEqual(self.global_args.get("VARIANT"), "cpu")
        first = self.stages[0]
        runs = [rest for word, rest in first if word == "RUN"]
        self.assertIn("cpu|cuda)", runs[0])
        self.assertIn("VARIANT must be cpu or cuda", runs[0])
        # The check runs before anything is installed or copied.
        self.assertEqual([w for w, _ in first[1:3]], ["ARG", "RUN"])

    def test_final_image_runs_as_numeric_non_root_with_a_healthcheck(self):
        runtime = [st for st in self.stages if st[0][1].endswith("AS runtime")][0]
        users = [rest for word, rest in runtime if word == "USER"]
        self.assertEqual(len(users), 1)
        self.assertRegex(users[0], r"^[1-9]\d*(:[1-9]\d*)?$")
        self.assertEqual(users[0].split(":")[0], "10001")
        hc = [rest for word, rest in runtime if word == "HEALTHCHECK"]
        self.assertEqual(len(hc), 1)
        self.assertRegex(hc[0], r'CMD \["/usr/local/bin/xlstm", "health"')
        ep = [rest for word, rest in runtime if word == "ENTRYPOINT"]
        self.assertEqual(ep, ['["/usr/local/bin/xlstmd"]'])
        exposed = " ".join(rest for word, rest in runtime if word == "EXPOSE").split()
        self.assertIn("50051", exposed)
        self.assertIn("9464", exposed)
        env = " ".join(rest for word, rest in runtime if word == "ENV")
        self.assertIn("XLSTMD_LISTEN=0.0.0.0:50051", env)
        self.assertIn("XLSTMD_HTTP_LISTEN=0.0.0.0:9464", env)
        self.assertIn("NVIDIA_DRIVER_CAPABILITIES=compute,utility", env)
        # "all" in an image gives a pod that asked for no GPU every GPU of its node.
        self.assertNotIn("NVIDIA_VISIBLE_DEVICES", env)

    def test_no_add_no_secrets(self):
        for word, rest in self.ins:
            self.assertNotEqual(word, "ADD", f"ADD {rest}: use COPY (ADD fetches URLs)")
            if word == "COPY":
                self.assertNotRegex(rest, r"\.(pem|key)\b|\.env\b|api[-_]?keys|id_rsa", rest)
            if word in ("ENV", "ARG"):
                for m in re.finditer(r"(\w+)=", rest):
                    self.assertNotRegex(m.group(1), r"(?i)(secret|password|token|api_?key)",
                                        f"{word} {m.group(1)}")
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        for needed in (".git", "build", "build-*", "*.pem", "*.key"):
            self.assertIn(needed, ignored)

    def test_runtime_installs_only_derived_packages(self):
        runtime = [st for st in self.stages if st[0][1].endswith("AS runtime")][0]
        installs = [rest for word, rest in runtime if word == "RUN" and "apt-get install" in rest]
        self.assertEqual(len(installs), 1)
        self.assertIn("xargs -a /tmp/runtime-packages.txt", installs[0])
        self.assertIn("rm -rf /var/lib/apt/lists/*", installs[0])
        build = self.stages[0]
        self.assertTrue(any("runtime-packages.sh" in r for w, r in build if w == "RUN"))
        self.assertTrue(any("bootstrap.sh --deps build" in r for w, r in build if w == "RUN"))
        self.assertFalse(any("-march=native" in r for w, r in self.ins))

    def test_runtime_packages_script_maps_libraries_to_packages(self):
        script = os.path.join(ROOT, "scripts", "runtime-packages.sh")
        r = subprocess.run([script, "/bin/ls"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("libc6", r.stdout.split())
        r = subprocess.run([script, "/nonexistent"], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)

    def test_derived_runtime_packages_come_with_bootstrap(self):
        if BIN_DIR is None:
            self.skipTest("pass --bin-dir to check the built binaries' packages")
        # This machine's CUDA toolkit is NVIDIA's tarball; the image installs NVIDIA's debs.
        r = subprocess.run([os.path.join(ROOT, "scripts", "runtime-packages.sh"), "--skip",
                            "/usr/local/cuda", os.path.join(BIN_DIR, "xlstmd"),
                            os.path.join(BIN_DIR, "xlstm")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        owners = r.stdout.split()
        self.assertGreater(len(owners), 5)
        for pkg in sorted(owners):
            st = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                                text=True)
            self.assertIn("install ok installed", st.stdout, pkg)
        with open(os.path.join(ROOT, "scripts", "bootstrap.sh")) as f:
            boot = f.read()
        build_pkgs = re.search(r"BUILD_PKGS=\((.*?)\)", boot, re.S).group(1).split()
        for p in ("libgrpc++-dev", "libabsl-dev", "libspdlog-dev", "libhiredis-dev"):
            self.assertIn(p, build_pkgs)


def main():
    global BIN_DIR
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir")
    a, rest = p.parse_known_args()
    BIN_DIR = os.path.abspath(a.bin_dir) if a.bin_dir else None
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
