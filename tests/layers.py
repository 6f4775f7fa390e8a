#!/usr/bin/env python3
"""The architecture, checked: which part may include and call which.

Reads tests/layers.txt (the parts, their folders and the allowed edges), then
  1. every #include "..." in the source tree must stay inside its part or follow an
     allowed edge;
  2. with a build dir: the objects of each static library, read with nm, must call only
     their own part or allowed parts (the linker's view: a declaration copied by hand
     cannot dodge it), and no two object files may call each other, directly or
     round a longer circle.
Prints every offence and exits 1 if there is one.
usage: layers.py SOURCE_DIR [BUILD_DIR]
"""
import os
import re
import subprocess
import sys
from collections import defaultdict

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def read_layers(path):
    parts, edges = [], set()
    for line in open(path):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        m = re.match(r'^part\s+(\w+)\s+(.+)$', line)
        if m:
            parts.append((m.group(1), [f.rstrip('/') + '/' for f in m.group(2).split()]))
            continue
        m = re.match(r'^(\w+)\s*->\s*(\w+)$', line)
        if m:
            edges.add((m.group(1), m.group(2)))
            continue
        raise SystemExit(f'{path}: cannot read line: {line}')
    # Longest folder first, so workers/ops/ wins over workers/.
    folders = sorted(((f, name) for name, fs in parts for f in fs), key=lambda x: -len(x[0]))
    return folders, edges


def part_of(rel, folders):
    for f, name in folders:
        if rel.startswith(f):
            return name
    return None


def sources(src, folders):
    for f, _ in folders:
        for root, _, files in os.walk(os.path.join(src, f)):
            for n in files:
                if n.endswith(('.c', '.h')):
                    yield os.path.relpath(os.path.join(root, n), src)


def check_includes(src, folders, edges):
    bad = []
    for rel in sorted(set(sources(src, folders))):
        me = part_of(rel, folders)
        text = open(os.path.join(src, rel), errors='replace').read()
        for inc in INCLUDE.findall(text):
            target = os.path.normpath(os.path.join(os.path.dirname(rel), inc))
            other = part_of(target, folders)
            if other is None or other == me:
                continue
            if (me, other) not in edges:
                bad.append(f'{rel}: includes {inc} ({me} -> {other} is not an allowed edge)')
    return bad


def nm_objects(lib):
    """{object name: (defined symbols, undefined symbols)} of one static library."""
    out = subprocess.run(['nm', '-A', '--defined-only', lib], capture_output=True, text=True).stdout
    und = subprocess.run(['nm', '-A', '-u', lib], capture_output=True, text=True).stdout
    objs = defaultdict(lambda: (set(), set()))
    for text, idx in ((out, 0), (und, 1)):
        for line in text.splitlines():
            # libx.a:obj.c.o:0000 T name   or   libx.a:obj.c.o:  U name
            head, _, sym = line.rpartition(' ')
            fields = head.split(':')
            if len(fields) < 3:
                continue
            kind = head.split()[-1] if head.split() else ''
            if idx == 0 and kind not in ('T', 'D', 'B', 'R', 'C', 'G', 'S'):
                continue
            objs[fields[1]][idx].add(sym)
    return objs


def find_libs(build, parts):
    """libbatchd_<part>.a of each part, where the build put it (stale others are ignored)."""
    libs = {}
    for root, _, files in os.walk(build):
        for n in files:
            m = re.match(r'^libbatchd_(\w+)\.a$', n)
            if m and m.group(1) in parts:
                libs[m.group(1)] = os.path.join(root, n)
    return libs


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def check_links(build, folders, edges):
    parts = {name for _, name in folders}
    libs = find_libs(build, parts)
    if set(libs) != parts:
        return [f'{build}: no libbatchd_{p}.a found' for p in sorted(parts - set(libs))]
    owner, defs, uses = {}, {}, {}
    for part, lib in libs.items():
        for obj, (d, u) in nm_objects(lib).items():
            key = (part, obj)
            defs[key], uses[key] = d, u
            for s in d:
                owner.setdefault(s, key)
    bad, graph = [], defaultdict(set)
    for key, u in uses.items():
        for s in u:
            other = owner.get(s)
            if other is None or other == key:
                continue
            graph[key].add(other)
            if other[0] != key[0] and (key[0], other[0]) not in edges:
                bad.append(f'{key[1]} ({key[0]}) calls {s} in {other[1]} ({other[0]}): '
                           f'{key[0]} -> {other[0]} is not an allowed edge')
    for comp in cycles(graph):
        bad.append('objects call each other in a circle: ' + ', '.join(o for _, o in comp))
    return bad


def main():
    src = sys.argv[1]
    folders, edges = read_layers(os.path.join(src, 'tests', 'layers.txt'))
    bad = check_includes(src, folders, edges)
    if len(sys.argv) > 2:
        bad += check_links(sys.argv[2], folders, edges)
    for b in bad:
        print(b)
    print(f'{len(bad)} offences' if bad else 'layers: every include and call follows tests/layers.txt')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
