#!/usr/bin/env python3
"""Fails when a source file includes across a forbidden layer edge (DESIGN.md section 2).

Between the folders of core/ the allowed edges are the library links of core/CMakeLists.txt
(CORE_LINKS below; the two are compared, so they cannot drift apart): a static library does
not fail to link when its sources use a header-only piece of a folder it does not link.

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

# Each core/ folder is one library target (xlstmd_<folder>, core/CMakeLists.txt) and links
# these directly; "kernels" is xlstmd_kernels. A folder may include headers of what it links,
# directly or through a PUBLIC link of those (the transitive closure), and of nothing else.
CORE_LINKS = {
    "base": set(),
    "sampling": {"base"},
    "tokenizer": {"base"},
    "model": {"base", "kernels"},
    "state": {"base", "model"},
    "engine": {"base", "model", "sampling", "state", "tokenizer"},
}


def core_reach(folder):
    """Folders (and "kernels") whose headers core/<folder>/ may include, itself included."""
    seen, todo = {folder}, [folder]
    while todo:
        for dep in CORE_LINKS.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def core_folder_violation(rel, inc):
    """The reason `rel` (under core/) may not include `inc` by the core link table, or None."""
    parts = rel.split("/")
    folder = parts[1] if len(parts) > 2 else ""
    if folder not in CORE_LINKS:
        return (f"core/{folder + '/' if folder else ''} has no library target in the layering "
                "table (core/CMakeLists.txt, CORE_LINKS)")
    top = inc.split("/")
    if top[0] == "core" and len(top) > 2 and top[1] not in core_reach(folder):
        allowed = sorted(core_reach(folder) - {folder})
        return f"core/{folder}/ does not link xlstmd_{top[1]} (it may include {allowed})"
    if top[0] == "kernels" and "kernels" not in core_reach(folder):
        return f"core/{folder}/ does not link xlstmd_kernels"
    return None


def cmake_link_drift(root):
    """Differences between CORE_LINKS and the xlstmd_* links in core/CMakeLists.txt."""
    path = os.path.join(root, "core", "CMakeLists.txt")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        text = re.sub(r"#[^\n]*", "", fh.read())
    declared = {}
    for name, body in re.findall(r"target_link_libraries\(\s*xlstmd_(\w+)\b([^)]*)\)", text):
        if name in CORE_LINKS:
            deps = set(re.findall(r"\bxlstmd_(\w+)", body)) - {"warnings"}
            declared.setdefault(name, set()).update(deps)
    found = []
    for folder, links in sorted(CORE_LINKS.items()):
        got = declared.get(folder, set())
        if got != links:
            found.append(f"core/CMakeLists.txt: xlstmd_{folder} links {sorted(got)}, "
                         f"check_includes.py CORE_LINKS says {sorted(links)}")
    return found


def violations_for(layer, rel, inc):
    """Returns a reason string when `rel` (in `layer`) may not include `inc`."""
    if inc.startswith("tests/") and layer != "tests":
        return "only tests/ may include tests/"
    # The toolkit's headers are included without a folder (our kernels/cuda/cuda_*.h are not
    # CUDA headers: cuda_backend.h is plain C++ for the registry).
    if ("/" not in inc and CUDA_HEADERS.match(inc)) and not rel.startswith("kernels/cuda/"):
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
        # quant.h: the quantized weight formats the seam's UploadQuantized takes.
        seam = ("kernels/backend.h", "kernels/op_params.h", "kernels/quant.h")
        if inc.startswith("kernels/") and inc not in seam:
            return "core/ sees only kernels/backend.h, kernels/op_params.h and kernels/quant.h"
        why = core_folder_violation(rel, inc)
        if why:
            return why
    if layer == "server" and inc.split("/")[0] == "tools":
        return "server/ does not depend on tools/"
    if layer == "tools" and inc.split("/")[0] == "server":
        return "tools/ talks to the server over gRPC, not through server/ code"
    if layer == "proto" and inc.split("/")[0] in ("core", "kernels", "server", "tools"):
        return "proto/ is the wire contract only"
    return None


def check(root):
    found = cmake_link_drift(root)
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
        write("core/model/ok.cc", '#include "kernels/backend.h"\n#include <vector>\n')
        write("core/state/ok.cc", '#include "core/model/state_layout.h"\n#include "core/base/check.h"\n')
        write("core/engine/ok.cc", '#include "core/state/snapshot.h"\n#include "kernels/backend.h"\n')
        write("core/CMakeLists.txt", "".join(
            f"target_link_libraries(xlstmd_{f} PUBLIC {' '.join('xlstmd_' + d for d in sorted(l))}"
            " PRIVATE xlstmd_warnings)\n" for f, l in CORE_LINKS.items()))
        if check(d):
            print("self-test: clean tree reported violations:", check(d))
            return 1
        planted = {
            "core/model/bad1.cc": '#include "server/chat_service.h"\n',
            "core/model/bad2.cc": '#include <grpcpp/grpcpp.h>\n',
            "kernels/bad3.cc": '#include "core/model/config.h"\n',
            "core/model/bad4.cc": '#include <cuda_runtime.h>\n',
            "core/model/bad5.cc": '#include "kernels/cpu/gemm.h"\n',
            # Between core folders: a lower folder reaching up, and a sideways edge.
            "core/base/bad6.cc": '#include "core/model/config.h"\n',
            "core/tokenizer/bad7.cc": '#include "core/model/json_file.h"\n',
            "core/sampling/bad8.cc": '#include "kernels/backend.h"\n',
            "core/state/bad9.cc": '#include "core/engine/engine.h"\n',
            "core/newfolder/bad10.cc": '#include "core/base/check.h"\n',
        }
        for rel, text in planted.items():
            write(rel, text)
        got = check(d)
        missing = [rel for rel in planted if not any(v.startswith(rel + ":") for v in got)]
        if missing:
            print("self-test: planted edges not detected:", missing)
            return 1
        # The table and the CMake link graph must not drift apart.
        with open(os.path.join(d, "core/CMakeLists.txt"), "a") as fh:
            fh.write("target_link_libraries(xlstmd_sampling PUBLIC xlstmd_tokenizer)\n")
        if not any(v.startswith("core/CMakeLists.txt: xlstmd_sampling") for v in check(d)):
            print("self-test: a CMake link missing from CORE_LINKS was not reported")
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
