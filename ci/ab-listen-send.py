#!/usr/bin/env python3
"""Interleaved A/B/C runs of `udsipc listen | udsipc send` throughput.
usage: ci/ab-listen-send.py ROUNDS LINES LINE_BYTES BIN...
Each round runs every binary once, the order rotated each round."""
import os, subprocess, sys, tempfile, time, statistics
rounds, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bins = sys.argv[4:]
d = tempfile.mkdtemp()
data = os.path.join(d, "in.txt")
with open(data, "wb") as f:
    line = b"m" * (size - 1) + b"\n"
    f.write(line * n)
res = {b: [] for b in bins}
for r in range(rounds):
    order = bins[r % len(bins):] + bins[:r % len(bins)]
    for b in order:
        sock = os.path.join(d, "s.sock")
        l = subprocess.Popen([b, "listen", sock, "--format", "text", "--count", str(n)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        l.stderr.readline()
        t0 = time.perf_counter()
        with open(data, "rb") as f:
            s = subprocess.Popen([b, "send", sock, "--drain-timeout", "60"], stdin=f, stderr=subprocess.DEVNULL)
            _, st, ru_s = os.wait4(s.pid, 0)
        _, lt, ru_l = os.wait4(l.pid, 0)
        t = time.perf_counter() - t0
        assert st == 0 and lt == 0, (st, lt)
        cpu = ru_s.ru_utime + ru_s.ru_stime + ru_l.ru_utime + ru_l.ru_stime
        res[b].append((n / t, cpu / n * 1e9))
for b in bins:
    v = [x for x, _ in res[b]]
    c = [y for _, y in res[b]]
    print(f"{os.path.basename(b)}: wall median {statistics.median(v)/1e6:.3f} M msgs/s (runs {[round(x/1e6,2) for x in v]}); "
          f"CPU (listen+send) median {statistics.median(c):.0f} ns/msg (runs {[round(x) for x in c]})")
