#!/usr/bin/env python3
"""Startup errors a new user meets are one clear line each, naming the flag to fix.

- a --listen port another process holds: exit 2 and exactly one stderr line that names
  --listen and the address (gRPC's own internal status is not printed before it);
- --model pointing nowhere: exit 2, one line naming --model and the path;
- --version: version, git commit, build type and compiled backends, exit 0;
- --cuda-math bf16 with --backend cpu: exit 2, one line naming --cuda-math (the CPU computes
  in f32 only; it never silently ignores a numerics request it was given explicitly).
"""
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def run(args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLSTMD_")}
    return subprocess.run([harness.CONFIG.xlstmd, "--threads", "1", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=env)


class StartupErrorsTest(harness.E2ETestCase):
    def test_port_in_use_is_one_line_naming_listen(self):
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        addr = f"127.0.0.1:{holder.getsockname()[1]}"
        p = run(["--model", harness.golden_dir(), "--listen", addr])
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("--listen", lines[0])
        self.assertIn(addr, lines[0])
        self.assertNotIn("chttp2", p.stderr)

    def test_version_names_commit_build_type_and_backends(self):
        p = run(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^xlstmd \d+\.\d+\.\d+ \(commit ([0-9a-f]+(-dirty)?|unknown), "
                                   r"\w+ build, backends: cpu(, cuda)?\)\n$")
        self.assertIn("--version", run(["--help"]).stdout)

    def test_bf16_math_on_the_cpu_backend_is_refused(self):
        p = run(["--model", harness.golden_dir(), "--listen", "127.0.0.1:0", "--backend", "cpu",
                 "--cuda-math", "bf16"])
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        self.assertIn("--cuda-math bf16 needs the CUDA backend", lines[-1], p.stderr)

    def test_missing_model_dir_names_the_flag_and_path(self):
        p = run(["--model", "/nonexistent/model", "--listen", "127.0.0.1:0"])
        self.assertEqual(p.returncode, 2, p.stderr)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("--model", lines[0])
        self.assertIn("/nonexistent/model", lines[0])


if __name__ == "__main__":
    harness.main()
