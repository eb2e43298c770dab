#!/usr/bin/env bash
# Disk benchmark: medv's NBD export of an .evhd against qemu-nbd (raw, LUKS) and nbdkit --filter=luks.
# Usage: bench/disk/run.sh [--size 1G] [--runtime 10] [--only raw,qemu-luks,nbdkit-luks,medv,nbdkit-raw,medv-raw] [--keep] [--prof DIR]
# Needs: qemu-utils, nbdkit, libnbd-bin (nbdcopy), fio. Writes bench/out/disk.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in qemu-nbd qemu-img nbdkit nbdcopy fio; do
  command -v "$tool" >/dev/null || { echo "bench/disk: $tool is not installed" >&2; exit 2; }
done
if [ ! -f dist/bench/disk/bench.js ] || [ ! -f dist/src/cli/main.js ] || [ -n "$(find src bench -name '*.ts' -newer dist/bench/disk/bench.js -print -quit)" ]; then
  npx tsc -p . >/dev/null || true   # tsc emits even when unrelated files have type errors
fi
node dist/bench/disk/bench.js "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' INT TERM EXIT
wait $pid
