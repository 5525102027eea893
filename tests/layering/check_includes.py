#!/usr/bin/env python3
"""Fails when a source file includes across a forbidden layer edge (DESIGN.md section 2).

Usage: check_includes.py REPO_ROOT     check the tree, print every violation, exit 1 if any
       check_includes.py --self-test   prove the checker catches a planted forbidden edge
"""
import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
SOURCE_EXT = (".h", ".hh", ".hpp", ".cc", ".cpp", ".cu", ".cuh")
CUDA_HEADERS = re.compile(r"^(cuda|cublas|cublasLt|cuda_runtime|cuda_bf16|cuda_fp16|curand|nvrtc)[\w_]*\.h$")
GRPC_OR_PROTO = re.compile(r"^(grpc|grpcpp|google/protobuf)/|\.pb\.h$|^xlstmd/v1/")


def violations_for(layer, rel, inc):
    """Returns a reason string when `rel` (in `layer`) may not include `inc`."""
    if inc.startswith("tests/") and layer != "tests":
        return "only tests/ may include tests/"
    if CUDA_HEADERS.match(os.path.basename(inc)) and not rel.startswith("kernels/cuda/"):
        return "CUDA headers only under kernels/cuda/"
    if layer == "kernels":
        if inc.split("/")[0] in ("core", "server", "proto", "tools"):
            return "kernels/ depends on nothing above it"
        if GRPC_OR_PROTO.search(inc):
            return "kernels/ never sees gRPC or protobuf"
        if inc.startswith("kernels/cuda/") and not (
                rel.startswith("kernels/cuda/") or rel == "kernels/backend_registry.cc"):
            return "only the backend registry reaches into kernels/cuda/"
        if inc.startswith("kernels/cpu/") and not (
                rel.startswith("kernels/cpu/") or rel == "kernels/backend_registry.cc"):
            return "only the backend registry reaches into kernels/cpu/"
    if layer == "core":
        if inc.split("/")[0] in ("server", "proto", "tools"):
            return "core/ depends only on kernels/"
        if GRPC_OR_PROTO.search(inc):
            return "core/ never sees gRPC or protobuf"
        if inc.startswith("kernels/") and inc not in ("kernels/backend.h", "kernels/op_params.h"):
            return "core/ sees only kernels/backend.h and kernels/op_params.h"
    if layer == "server" and inc.split("/")[0] == "tools":
        return "server/ does not depend on tools/"
    if layer == "tools" and inc.split("/")[0] == "server":
        return "tools/ talks to the server over gRPC, not through server/ code"
    if layer == "proto" and inc.split("/")[0] in ("core", "kernels", "server", "tools"):
        return "proto/ is the wire contract only"
    return None


def check(root):
    found = []
    for layer in ("kernels", "core", "server", "tools", "proto", "tests"):
        top = os.path.join(root, layer)
        for dirpath, _, files in os.walk(top):
            for f in files:
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                if f.endswith(".cu") and not rel.startswith("kernels/cuda/"):
                    found.append(f"{rel}: .cu files live only under kernels/cuda/")
                if not f.endswith(SOURCE_EXT):
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
                for inc in INCLUDE.findall(text):
                    why = violations_for(layer, rel, inc)
                    if why:
                        found.append(f"{rel}: includes {inc}: {why}")
    return found


def self_test():
    with tempfile.TemporaryDirectory() as d:
        def write(rel, text):
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w") as fh:
                fh.write(text)
        write("core/ok.cc", '#include "kernels/backend.h"\n#include <vector>\n')
        if check(d):
            print("self-test: clean tree reported violations:", check(d))
            return 1
        planted = {
            "core/bad1.cc": '#include "server/chat_service.h"\n',
            "core/bad2.cc": '#include <grpcpp/grpcpp.h>\n',
            "kernels/bad3.cc": '#include "core/model/config.h"\n',
            "core/bad4.cc": '#include <cuda_runtime.h>\n',
            "core/bad5.cc": '#include "kernels/cpu/gemm.h"\n',
        }
        for rel, text in planted.items():
            write(rel, text)
        got = check(d)
        missing = [rel for rel in planted if not any(v.startswith(rel) for v in got)]
        if missing:
            print("self-test: planted edges not detected:", missing)
            return 1
    print("self-test: all planted forbidden edges detected")
    return 0


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--self-test":
        return self_test()
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    found = check(sys.argv[1])
    for v in found:
        print(v)
    print(f"{len(found)} forbidden include edge(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
