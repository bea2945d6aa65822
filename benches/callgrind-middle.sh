#!/usr/bin/env bash
# Instructions per call of the process in the middle of the router
# benchmark (`router` or `lean` hop), counted by callgrind: exact and
# repeatable, where wall-clock CPU time on a shared VM drifts by 10-15 %.
#
#   cargo build --release --bins
#   benches/callgrind-middle.sh router      # or: lean
#
# The middle binary is swapped for a wrapper that starts it under
# valgrind for one run of `BENCH_ONLY=<path>` at concurrency 1; after
# warm-up the counters are zeroed, and dumped WINDOW seconds later (the
# benchmark kills its servers with SIGKILL, so the dump must come first).
# Calls are counted as HTTP/2 requests taken (h2's `take_request`, which
# is `Recv::take_request` or, with LTO inlining it, `StreamRef::take_request`).
# Needs valgrind (with callgrind_control and callgrind_annotate).
set -euo pipefail
path=${1:?usage: $0 router|lean}
window=${WINDOW:-20}
cd "$(dirname "$0")/.."
case $path in
  router) bin=tandem-router; pattern="valgrind.*tandem-router --region";;
  lean) bin=tandem-passthrough; pattern="valgrind.*tandem-passthrough.*--lean";;
  *) echo "unknown path $path (router or lean)" >&2; exit 2;;
esac
out=$(mktemp -d)
real="$out/$bin"
cp "target/release/$bin" "$real"
restore() { cp "$real" "target/release/$bin"; }
trap restore EXIT
cat > "target/release/$bin" <<EOS
#!/usr/bin/env bash
if [[ " \$* " == *" --lean "* || "$bin" == tandem-router ]]; then
  exec valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p.out" "$real" "\$@"
fi
exec "$real" "\$@"
EOS
chmod +x "target/release/$bin"

BENCH_ONLY=$path BENCH_SECONDS=$((window * 2)) BENCH_CONCURRENCY=1 BENCH_RATES=1 \
  cargo bench -p tandem-benches --bench router > "$out/bench.log" 2>&1 &
bench=$!
for _ in $(seq 1 600); do grep -q "^corpus" "$out/bench.log" 2>/dev/null && break; sleep 1; done
sleep 8
pid=$(pgrep -f "$pattern" | head -1)
callgrind_control -z "$pid" > /dev/null
sleep "$window"
callgrind_control -d "$pid" > /dev/null
wait "$bench" || true
dump=$(ls "$out"/callgrind.*.out.1)
total=$(callgrind_annotate --auto=no "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
calls=$(callgrind_annotate --tree=caller --threshold=100 --auto=no "$dump" \
  | grep -E "< \?\?\?:h2::proto::streams::[A-Za-z_:<>]*::take_request \(" \
  | head -1 | sed -E 's/.*\(([0-9,]+)x\).*/\1/; s/,//g' || true)
echo "$path: $total instructions over $calls calls = $((total / calls)) per call"
echo "profile: $dump (callgrind_annotate --inclusive=yes $dump)"
