#!/usr/bin/env bash
# The router benchmark at concurrency 1, N times over (fresh processes each
# run), and the median of each ratio: one run's added-latency ratio swings
# by up to 2x with where the kernel puts the processes on this 2-core
# machine, so a verdict needs several.
#
#   cargo build --release --bins
#   benches/repeat-c1.sh 5                       # tonic's client
#   BENCH_CLIENT=h2 benches/repeat-c1.sh 5       # the router's own client
set -euo pipefail
runs=${1:-5}
cd "$(dirname "$0")/.."
lines=$(mktemp)
for i in $(seq 1 "$runs"); do
  BENCH_SECONDS=${BENCH_SECONDS:-10} BENCH_CONCURRENCY=1 BENCH_RATES=none \
    cargo bench -p tandem-benches --bench router 2> /dev/null | grep "^concurrency 1:" | tee -a "$lines"
done
python3 - "$lines" <<'PY'
import re, statistics, sys
keys = ["router / bare hop", "router / bare hop on h2", "router / lean hop", "QPS / direct: router"]
values = {k: [] for k in keys}
for line in open(sys.argv[1]):
    for k in keys:
        m = re.search(re.escape(k) + r" ([\d.]+)", line)
        if m:
            values[k].append(float(m.group(1)))
for k in keys:
    v = values[k]
    if v:
        print(f"{k:26s} median {statistics.median(v):.2f}  runs {', '.join(f'{x:.2f}' for x in v)}")
PY
