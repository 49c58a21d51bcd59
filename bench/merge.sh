#!/usr/bin/env bash
# The merge benchmark issue 17 asks for: every merge method (base + two
# models) over three synthetic BF16 LLaMA-shaped checkpoints of SIZE each
# (default 1GiB; HIDDEN, default 1024, or 4096 for LLaMA-7B's widths),
# against the I/O floor measured in the same interleaved rounds (REPS,
# default 3): wall, CPU seconds, peak RSS and the ratio, medians. It is
# bench/floor.sh under the name the issue gives; METHODS (e.g.
# METHODS=breadcrumbs), NOHASH, CACHED and BASELINE work as there.
#   bash bench/merge.sh [SIZE] [REPS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")"
exec bash floor.sh "${1:-1GiB}" "${HIDDEN:-1024}" "${2:-3}" "${3:-/tmp/weightops-bench-merge}"
