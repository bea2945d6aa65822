#!/usr/bin/env bash
# Where a call's time goes, leg by leg, at concurrency 1: traces the
# writev/sendto/recvfrom system calls (tandem's servers answer with
# `send`, see `tandem_common::one_write`; clients write with `writev`) of
# the benchmark client, the process in the middle and the index-node with
# `perf` (system-wide tracepoints; needs
# root), splits them into calls, and prints the median of each leg, e.g.
# `mid_in` (request read -> first write to the node), `mid_req_split`
# (first -> last write of the request: 0 when headers and body leave in
# one writev), `node`, `mid_out`, `mid_resp_split`.
#
#   cargo build --release --bins
#   benches/trace-legs.sh router      # or: direct, hop, hop-h2, lean
#
# Needs perf and python3.
set -euo pipefail
path=${1:?usage: $0 direct|hop|hop-h2|lean|router}
cd "$(dirname "$0")/.."
out=$(mktemp -d)
BENCH_ONLY=$path BENCH_SECONDS=30 BENCH_CONCURRENCY=1 BENCH_RATES=1 \
  cargo bench -p tandem-benches --bench router > "$out/bench.log" 2>&1 &
bench=$!
for _ in $(seq 1 600); do grep -q "^corpus" "$out/bench.log" 2>/dev/null && break; sleep 1; done
sleep 4
node=$(pgrep -f "tandem-index-node serve --listen 127.0.0.1:0" | head -1)
case $path in
  router) mid=$(pgrep -f "tandem-router --region r1" | head -1);;
  lean) mid=$(pgrep -f "tandem-passthrough.*--lean" | head -1);;
  hop-h2) mid=$(pgrep -f "tandem-passthrough.*--h2" | head -1);;
  hop) mid=$(pgrep -f "tandem-passthrough --upstream [0-9.:]*$" | head -1);;
  direct) mid=0;;
  *) echo "unknown path $path" >&2; exit 2;;
esac
client=$(pgrep -f "release/deps/router-" | head -1)
perf record -q -a -o "$out/perf.data" \
  -e syscalls:sys_exit_writev,syscalls:sys_exit_sendto,syscalls:sys_exit_recvfrom -- sleep 3 > /dev/null 2>&1
# The benchmark's processes die with it only when it ends on its own.
kill "$bench" "$client" $(pgrep -P "$client") 2> /dev/null || true
wait "$bench" 2> /dev/null || true
perf script -i "$out/perf.data" -F pid,time,event,trace > "$out/trace.txt" 2> /dev/null
python3 - "$out/trace.txt" "$client" "$node" "$mid" "$path" <<'PY'
import re, statistics, sys
trace, client, node, mid, path = sys.argv[1:]
role = {client: "B", node: "N"}
if mid != "0":
    role[mid] = "M"
events = []
for line in open(trace):
    m = re.match(r"\s*(\d+)\s+([\d.]+):\s+syscalls:sys_exit_(\w+):\s+0x([0-9a-f]+)", line)
    if not m or m.group(1) not in role:
        continue
    n = int(m.group(4), 16)
    if n > 1 << 40:  # an error such as EAGAIN
        continue
    events.append((float(m.group(2)) * 1e6, role[m.group(1)], "r" if m.group(3) == "recvfrom" else "w", n))
# A call starts with a client write that follows a client read.
calls, current, last = [], None, "r"
for e in events:
    if e[1] == "B" and e[2] == "w" and last == "r":
        if current:
            calls.append(current)
        current = []
    if e[1] == "B":
        last = e[2]
    if current is not None:
        current.append(e)
def times(call, who, kind, answer=None):
    # Answers are the big writes plus their 10-byte trailers frame.
    return [t for t, w, k, n in call if w == who and k == kind
            and (answer is None or (n > 500 or n == 10) == answer)]
rows = []
for c in calls:
    try:
        b_w, b_r, n_r, n_w = times(c, "B", "w"), times(c, "B", "r"), times(c, "N", "r"), times(c, "N", "w")
        row = {"total": b_r[-1] - b_w[0], "node": n_w[0] - n_r[-1], "node_reads": n_r[-1] - n_r[0],
               "node_resp_split": n_w[-1] - n_w[0]}
        if mid != "0":
            m_req, m_ans, m_in = times(c, "M", "w", False), times(c, "M", "w", True), times(c, "M", "r", False)
            row.update(mid_in=m_req[0] - m_in[0], mid_req_split=m_req[-1] - m_req[0],
                       mid_out=m_ans[0] - n_w[-1], mid_resp_split=m_ans[-1] - m_ans[0])
        rows.append(row)
    except IndexError:
        continue
print(f"{path}: {len(rows)} calls; median µs per leg")
for key in rows[0]:
    print(f"  {key:16s} {statistics.median(r[key] for r in rows):8.1f}")
PY
