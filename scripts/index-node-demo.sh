#!/usr/bin/env bash
# Starts one release index-node on 127.0.0.1:7101 (metrics :9101) over
# ./target/demo-index, loads the English sample pages into tenant "en",
# and keeps the node running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/tandem-index-node
data=./target/demo-index
"$bin" serve --data-dir "$data" --listen 127.0.0.1:7101 --metrics-listen 127.0.0.1:9101 &
node=$!
trap 'kill -TERM $node 2>/dev/null; wait $node' INT TERM EXIT
for _ in $(seq 100); do
  "$bin" load --addr http://127.0.0.1:7101 --tenant en --create en --where lang=en \
    data/tldr_pages/docs.jsonl.gz && break
  sleep 0.1
done
echo "index-node ready on 127.0.0.1:7101 (tenant en, shard 0); Ctrl-C stops it"
wait $node
