#!/bin/bash
# How a segment's space is prepared against what a commit's fdatasync costs
# (docs/DURABILITY.md, "Pre-written segments"). Usage: fio_prepare.sh DIR LABEL
# For 4 KiB .. 1 MiB O_DIRECT writes, each followed by fdatasync, into a file
# that is (a) fresh (appending), (b) pre-written with zeros, (c) fallocate()d,
# (d) prepared with FALLOC_FL_WRITE_ZEROES (skipped where it is refused).
# Prints one line per case: label, preparation, write size, MB/s, writes/s,
# fdatasync p50 and p99; preparation times go to stderr. Needs fio, python3.
set -u
D=$1; L=$2; SZ=$((1024 * 1024 * 1024)); HERE=$(dirname "$0"); J=${TMPDIR:-/tmp}/prewrite-fio.json
prep() { # $1 = how, $2 = file; fails when the preparation is refused
  rm -f "$2"; sync
  case $1 in
    fresh) : ;;
    prewritten) local t0; t0=$(date +%s.%N)
      dd if=/dev/zero of="$2" bs=1M count=1024 oflag=direct conv=fdatasync status=none
      echo "prep prewritten $(echo "$(date +%s.%N) - $t0" | bc) s/GiB" >&2 ;;
    fallocate) echo "prep fallocate $(python3 "$HERE/fallocate.py" default "$2" $SZ) s/GiB" >&2 ;;
    wz) local t; t=$(python3 "$HERE/fallocate.py" wz "$2" $SZ) || { echo "prep wz refused: $t" >&2; return 1; }
      echo "prep wz $t s/GiB" >&2 ;;
  esac
}
for bs in 4k 64k 512k 1m; do for m in fresh prewritten fallocate wz; do
  f=$D/prewrite-fio.dat; prep $m "$f" || continue
  fio --name=t --filename="$f" --rw=write --bs=$bs --direct=1 --ioengine=psync --fdatasync=1 --size=$SZ \
    --fallocate=none --runtime=6 --output-format=json > "$J" 2>/dev/null
  python3 - "$J" "$L" $m $bs <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))['jobs'][0]
w, p = j['write'], j['sync']['lat_ns'].get('percentile', {})
print(*sys.argv[2:], "%.0f MB/s" % (w['bw_bytes'] / 1e6), "%.0f iops" % w['iops'],
      "sync p50 %.0f us p99 %.0f us" % (p.get('50.000000', 0) / 1e3, p.get('99.000000', 0) / 1e3))
PY
done; done
rm -f "$D/prewrite-fio.dat" "$J"
