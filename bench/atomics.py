#!/usr/bin/env python3
"""Atomic read-modify-write instructions per request, from a callgrind dump.

Instruction counts say little about what an atomic costs: a `lock`-prefixed
instruction (an `Arc` clone or drop, a mutex, tokio's task and waker
states) takes ~20 cycles where most take one. nginx's worker runs ~7 of
them per proxied request in its own code; this counts ours.

The dump must be made with `--dump-instr=yes` (bench/instructions.sh does
with ATOMICS=1). Every `lock`-prefixed instruction and every `xchg` with a
memory operand in BINARY's disassembly (objdump) is looked up in the
dump's per-instruction costs of that binary's object.

Usage: bench/atomics.py BINARY DUMP REQUESTS [TOP=15]
"""
import collections
import re
import subprocess
import sys


def atomic_addresses(binary):
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary],
                          check=True, capture_output=True, text=True).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t(lock .*|xchg .*\(.*)", line)
        if m:
            found[int(m.group(1), 16)] = m.group(2).split("#")[0].strip()
    return found


def count(binary, dump, requests):
    atomics = atomic_addresses(binary)
    name = binary.rsplit("/", 1)[-1]
    objects, functions = {}, {}
    obj = fn = None
    addr, after_call = 0, False
    per_fn = collections.Counter()
    for line in open(dump, errors="replace"):
        m = re.match(r"(c?)(ob|fn)=\((\d+)\)(?: (.*))?", line)
        if m:
            table = objects if m.group(2) == "ob" else functions
            if m.group(4):
                table[m.group(3)] = m.group(4)
            if not m.group(1):  # ob= / fn= set the current place; cob= / cfn= name a callee
                if m.group(2) == "ob":
                    obj = table.get(m.group(3))
                else:
                    fn = table.get(m.group(3))
            continue
        if line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
            continue
        if not line or line[0] not in "0+-*":
            continue
        fields = line.split()
        pos = fields[0]
        if pos.startswith("0x"):
            addr = int(pos, 16)
        elif pos[0] in "+-":
            addr += int(pos)
        if after_call:
            after_call = False
            continue
        if obj and obj.endswith(name) and addr in atomics and len(fields) >= 3:
            per_fn[fn] += int(fields[2])
    return sum(per_fn.values()) / requests, per_fn


def main():
    binary, dump, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    total, per_fn = count(binary, dump, requests)
    print(f"{total:.1f} atomic read-modify-write instructions/request")
    for fn, n in per_fn.most_common(top):
        print(f"  {n / requests:6.2f}  {fn}")


if __name__ == "__main__":
    main()
