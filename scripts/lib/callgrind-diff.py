#!/usr/bin/env python3
"""Per-request instruction counts from two callgrind runs of the same program that differ only in
the number of requests: (inclusive cost with many - with few) / (many - few), per function; and
the heap allocations per request (calls of the C allocator's malloc, calloc and realloc, which
Rust's allocator calls), the same way.

Usage: callgrind-diff.py FEW_OUT FEW_N MANY_OUT MANY_N [TOP]
"""
import re
import subprocess
import sys


def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if m:
            name = re.sub(r" \[.*\]$", "", m.group(2))
            costs[name] = int(m.group(1).replace(",", ""))
    return costs


ALLOCATORS = ("malloc", "calloc", "realloc")


def allocations(path):
    """Calls of the C allocator's entry points, from the call records (`calls=N`) of the file."""
    text = open(path).read()
    names = {}
    for m in re.finditer(r"^c?fn=\((\d+)\)(?: (.*))?$", text, re.M):
        if m.group(2):
            names[m.group(1)] = m.group(2)
    total = 0
    target = None
    for line in text.splitlines():
        m = re.match(r"^cfn=\((\d+)\)", line)
        if m:
            target = names.get(m.group(1), "")
            continue
        m = re.match(r"^calls=(\d+) ", line)
        if m and target is not None:
            if target.split(" ")[0].split("@")[0] in ALLOCATORS:
                total += int(m.group(1))
            target = None
    return total


def main():
    few, few_n, many, many_n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 40
    a, b = inclusive(few), inclusive(many)
    per = {k: (v - a.get(k, 0)) / (many_n - few_n) for k, v in b.items()}
    total = per.get("PROGRAM TOTALS", 0)
    print(f"{total:10.0f}  instructions per request (all)")
    allocs = (allocations(many) - allocations(few)) / (many_n - few_n)
    print(f"{allocs:10.1f}  heap allocations per request (malloc, calloc, realloc)")
    rows = sorted(((v, k) for k, v in per.items() if "kavach_core::" in k), reverse=True)
    for v, k in rows[:top]:
        print(f"{v:10.0f}  {k.replace('???:', '')[:150]}")


if __name__ == "__main__":
    main()
