#!/usr/bin/env bash
# Refuse to start a venv build that the disk cannot hold: pip otherwise fails halfway with
# "[Errno 28] No space left on device", leaving a half-built venv and naming neither size nor place.
#
#   bash scripts/need_disk.sh GIB DIR WHAT HOW   # exit 1 naming WHAT and HOW (to build it elsewhere)
#                                                # when DIR's disk has less than GIB free
set -euo pipefail

need_gib="$1"
dir="$2"
what="$3"
elsewhere="$4"
# The venv may not exist yet: measure the nearest folder that does.
probe="$dir"
while [ ! -e "$probe" ]; do probe="$(dirname "$probe")"; done
free_kib="$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')"
if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    free_gib="$(awk -v k="$free_kib" 'BEGIN { printf "%.1f", k / 1048576 }')"
    echo "error: building $what needs about $need_gib GiB free on the disk of $probe; $free_gib GiB is free." >&2
    echo "       Free some space (old clones, runs/, ~/.cache/pip), or build it on another disk: $elsewhere." >&2
    exit 1
fi
