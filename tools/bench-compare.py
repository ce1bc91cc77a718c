#!/usr/bin/env python3
"""bench-compare.py BASE.md[,BASE2.md...] NEW.md[,NEW2.md...] - compare outputs of tools/bench-gpu
(the markdown they write with --out): every decode row (total ms per step), prefill row
(tokens/s) and the whole-model decode line, as new/base; with several files a side, each number
is that side's best (rounds alternate on a shared machine: the best is the least disturbed). Prints a markdown table; exits 1 when a number is worse
than the tolerance (default 5 %, --tol 0.05), 0 otherwise."""
import re
import sys


def parse(path):
    rows, section = {}, ''
    for line in open(path):
        line = line.rstrip('\n')
        if line.startswith('### '):
            section = line[4:]
            continue
        m = re.match(r'\| (\d+K) \|(.*)\*\*([\d.]+)\*\*', line)
        if m and 'Decode' in section:  # decode: the bold column is the step's total in ms
            kind = 'CSA' if 'ratio 4' in section or 'CSA' in section else 'HCA'
            rows[('decode ms', kind, m.group(1))] = (float(m.group(3)), 'lower')
            continue
        m = re.match(r'\| (SWA|CSA|HCA) \| (\d+K) \| ([\d.]+) \| (\d+) \|', line)
        if m:
            rows[('prefill tok/s', m.group(1), m.group(2))] = (float(m.group(4)), 'higher')
            continue
        m = re.search(r'decode, all 43 layers, batch 1: median ([\d.]+) ms', line)
        if m:
            rows[('decode ms', '43 layers', section.split(' at ')[-1].split(' tokens')[0])] = (float(m.group(1)), 'lower')
    return rows


def best(paths):
    rows = {}
    for p in paths.split(','):
        for key, (v, better) in parse(p).items():
            if key not in rows or (v < rows[key][0] if better == 'lower' else v > rows[key][0]):
                rows[key] = (v, better)
    return rows


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    tol = 0.05
    if '--tol' in sys.argv:
        tol = float(sys.argv[sys.argv.index('--tol') + 1])
        args.remove(sys.argv[sys.argv.index('--tol') + 1])
    base, new = best(args[0]), best(args[1])
    worse = 0
    print('| what | layer | context | base | new | new/base | |\n|---|---|---|---|---|---|---|')
    for key in base:
        if key not in new:
            print('| %s | %s | %s | %g | missing | | FAIL |' % (key + (base[key][0],)))
            worse += 1
            continue
        b, better = base[key]
        n = new[key][0]
        ratio = n / b if b else float('inf')
        bad = ratio > 1 + tol if better == 'lower' else ratio < 1 - tol
        worse += bad
        print('| %s | %s | %s | %g | %g | %.3f | %s |' % (key + (b, n, ratio, 'WORSE' if bad else 'ok')))
    print('\n%d of %d numbers worse than %.0f %% (%s)' % (worse, len(base), 100 * tol,
                                                         'decode: lower is better; prefill: higher'))
    return 1 if worse else 0


if __name__ == '__main__':
    sys.exit(main())
