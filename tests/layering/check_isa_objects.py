#!/usr/bin/env python3
"""Fails when an ISA-specific kernel object exports a symbol the linker could share.

Usage: check_isa_objects.py NM ARCHIVE

Files compiled with -mavx2 / -mavx512* flags (kernels/cpu/*_avx2.cc, *_avx512.cc) run only
after run-time dispatch picked their ISA. A weak or unique symbol in one of them (an inline
function, a template instance, a static local of either) is a COMDAT copy the linker may pick
for every caller in the program, including code that runs on a CPU without that ISA. Their
helpers live in kernels/cpu/simd.h with internal linkage, so their objects may export only
strong entry points; this test keeps it that way.
"""
import re
import subprocess
import sys

ISA_MEMBER = re.compile(r"_(avx2|avx512)\.cc\.o$")
# GNU nm writes "archive:member:address", llvm-nm (the clang trees) "archive:member: address".
NM_LINE = re.compile(r"^[^:]*:([^:]+):\s*[0-9a-fA-F]*\s+(\S)\s+(.*)$")
# nm symbol types for weak (W, w, V, v), unique global (u) and indirect (i) definitions.
SHARED_TYPES = set("WwVvui")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    nm, archive = sys.argv[1], sys.argv[2]
    out = subprocess.run([nm, "-A", "-C", "--defined-only", archive], check=True,
                         capture_output=True, text=True).stdout
    members, found = set(), []
    for line in out.splitlines():
        m = NM_LINE.match(line)  # "archive:member:address type name"
        if not m or not ISA_MEMBER.search(m.group(1)):
            continue
        members.add(m.group(1))
        if m.group(2) in SHARED_TYPES:
            found.append(f"{m.group(1)}: {m.group(2)} {m.group(3)}")
    if not members:
        print(f"no *_avx2.cc.o / *_avx512.cc.o members in {archive}")
        return 1
    for f in found:
        print(f)
    print(f"{len(members)} ISA objects, {len(found)} shareable symbol(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
