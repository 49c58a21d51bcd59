#!/usr/bin/env bash
# The reference merge benchmark: a Model Breadcrumbs merge (base + two
# models) over three synthetic BF16 LLaMA-shaped checkpoints of SIZE each
# (default 1GiB, hidden 1024), against the I/O floor measured in the same
# rounds (REPS, default 3), with wall, CPU seconds, peak RSS and the ratio.
# It is bench/floor.sh with one method: METHODS, NOHASH, CACHED and
# BASELINE work as there.
#   bash bench/merge.sh [SIZE] [REPS] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")"
METHODS=${METHODS:-breadcrumbs} exec bash floor.sh "${1:-1GiB}" 1024 "${2:-3}" "${3:-/tmp/weightops-bench-merge}"
