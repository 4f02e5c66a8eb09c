#!/bin/bash
# A write with O_DSYNC (what RWF_DSYNC does per write) against write +
# fdatasync, for small commits over pre-written space, twice, interleaved
# (docs/DURABILITY.md, "Pre-written segments"). Usage: fio_dsync.sh DIR
set -u
D=$1; f=$D/prewrite-dsync.dat; J=${TMPDIR:-/tmp}/prewrite-dsync.json
dd if=/dev/zero of="$f" bs=1M count=512 oflag=direct conv=fdatasync status=none
for rep in 1 2; do for bs in 4k 16k 64k; do for mode in fdatasync dsync; do
  if [ $mode = fdatasync ]; then m="--fdatasync=1"; else m="--sync=dsync"; fi
  fio --name=t --filename="$f" --rw=write --bs=$bs --direct=1 --ioengine=psync $m --size=512m \
    --fallocate=none --runtime=4 --output-format=json > "$J" 2>/dev/null
  python3 - "$J" $rep $bs $mode <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))['jobs'][0]; w = j['write']
lat = w['clat_ns']['percentile']; s = j['sync']['lat_ns'].get('percentile', {})
print("rep", *sys.argv[2:], "%.0f iops" % w['iops'],
      "write p50 %.0f us p99 %.0f us" % (lat['50.000000'] / 1e3, lat['99.000000'] / 1e3),
      "fdatasync p50 %.0f us" % (s.get('50.000000', 0) / 1e3))
PY
done; done; done
rm -f "$f" "$J"
