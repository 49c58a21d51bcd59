#!/usr/bin/env bash
# Every merge method against the I/O floor, as issue 17 asks: three
# synthetic BF16 LLaMA-shaped checkpoints of SIZE each (default 1GiB) at
# HIDDEN width (default 1024; 4096 gives LLaMA-7B's 4096x11008 MLP
# matrices), merged base + two models by each method; every round measures
# the floor (cat of the three inputs from the page cache, then writing a
# file of random bytes of the output's size with fsync) and then each method, interleaved;
# REPS rounds (default 3). Each line: wall, CPU seconds (user + system)
# and peak RSS (/usr/bin/time -v), medians, and the ratio of the median
# wall to the median floor. METHODS picks methods; FLAGS adds merge flags
# (FLAGS=--no-hash); NOHASH=1 also runs each method with --no-hash in the
# same rounds (lines "METHOD@nohash": without the inputs' SHA-256);
# BASELINE=path/to/weightops also runs that binary in the same rounds (an
# older build, lines "METHOD@base"). Hashing is cold (WEIGHTOPS_HASH_CACHE=off,
# what a release job on fresh inputs pays); CACHED=1 also runs each method
# with a digest cache warmed before the rounds (lines "METHOD@cached": a
# recipe merged again). Every timed command starts after a sync: deleting
# the last output leaves discards and writeback pending (the disk is
# mounted with discard), and the next fsync would wait for them — a floor
# right after a deletion measured 1.9 s, after a sync 0.9 s.
#   bash bench/floor.sh [SIZE] [HIDDEN] [REPS] [WORKDIR]
set -euo pipefail
export WEIGHTOPS_HASH_CACHE=off
size=${1:-1GiB}
hidden=${2:-1024}
reps=${3:-3}
work=${4:-/tmp/weightops-bench-floor}
methods=${METHODS:-task_arithmetic linear slerp breadcrumbs ties dare_ties della}
cd "$(dirname "$0")/.."
mkdir -p "$work"
go build -o "$work/weightops" ./cmd/weightops
bin="$work/weightops"
tag="$size-h$hidden"
for i in 1 2 3; do
  f="$work/m$i-$tag.safetensors"
  [ -f "$f" ] || "$bin" synth -q --size "$size" --hidden "$hidden" --seed "$i" "$f" >/dev/null
done
recipe() { # method → recipe on the three models
  local m=$1 params
  case $m in
    task_arithmetic|linear) params="{weight: 0.5}" ;;
    breadcrumbs) params="{weight: 0.5, density: 0.9, gamma: 0.01}" ;;
    ties|dare_ties) params="{weight: 0.5, density: 0.5}" ;;
    della) params="{weight: 0.5, density: 0.7, epsilon: 0.15}" ;;
  esac
  if [ "$m" = slerp ]; then
    printf 'merge_method: slerp\nbase_model: m1-%s.safetensors\nmodels:\n  - model: m1-%s.safetensors\n  - model: m2-%s.safetensors\nparameters: {t: 0.5}\ndtype: bfloat16\n' "$tag" "$tag" "$tag"
    return
  fi
  if [ "$m" = linear ]; then
    printf 'merge_method: linear\nmodels:\n  - model: m2-%s.safetensors\n    parameters: %s\n  - model: m3-%s.safetensors\n    parameters: %s\ndtype: bfloat16\n' "$tag" "$params" "$tag" "$params"
    return
  fi
  printf 'merge_method: %s\nbase_model: m1-%s.safetensors\nmodels:\n  - model: m2-%s.safetensors\n    parameters: %s\n  - model: m3-%s.safetensors\n    parameters: %s\nparameters: {seed: 1}\ndtype: bfloat16\n' \
    "$m" "$tag" "$tag" "$params" "$tag" "$params"
}
for m in $methods; do recipe "$m" > "$work/$m-$tag.yaml"; done
runs=""
for m in $methods; do
  runs="$runs $m"
  [ -n "${NOHASH:-}" ] && runs="$runs $m@nohash"
  [ -n "${BASELINE:-}" ] && runs="$runs $m@base"
  [ -n "${CACHED:-}" ] && runs="$runs $m@cached"
done
if [ -n "${CACHED:-}" ]; then
  rm -rf "$work/hash-cache" "$work/out-warm"
  sleep 2 # inputs written in the last two seconds are not cached
  WEIGHTOPS_HASH_CACHE="$work/hash-cache" "$bin" merge -q "$work/task_arithmetic-$tag.yaml" -o "$work/out-warm" >/dev/null
  rm -rf "$work/out-warm"
  [ "$(ls "$work/hash-cache" | wc -l)" -ge 3 ] || echo "floor.sh: the digest cache was not warmed" >&2
fi
secs() { awk -F: '{ if (NF==2) print $1*60+$2; else if (NF==3) print $1*3600+$2*60+$3; else print $1 }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
outbytes=$(stat -L -c %s "$work/m1-$tag.safetensors")
declare -A walls cpus rsss
floors=""
# The floor writes random bytes, not zeros: this VM's disk takes zero
# blocks down another path (1.9–2.3 s for 886 MB one run in three, against
# a steady 0.96 s for the same size of random bytes in the same minutes).
src="$work/floor-src-$outbytes.bin"
[ -f "$src" ] || head -c "$outbytes" /dev/urandom > "$src"
cat "$work"/m[123]-"$tag".safetensors "$src" > /dev/null
for r in $(seq "$reps"); do
  t0=$(date +%s.%N)
  cat "$work"/m[123]-"$tag".safetensors > /dev/null
  dd if="$src" of="$work/ddout" bs=1M count=$((outbytes / 1048576)) conv=fsync status=none
  t1=$(date +%s.%N)
  rm -f "$work/ddout"
  sync # the deleted file's discards and writeback settle outside the timings
  floors="$floors $(echo "$t1 - $t0" | bc)"
  for m in $runs; do
    b=$bin extra=""
    [ "${m%@base}" != "$m" ] && b=$BASELINE
    [ "${m%@nohash}" != "$m" ] && extra=--no-hash
    cache=off
    [ "${m%@cached}" != "$m" ] && cache="$work/hash-cache"
    out="$work/out-$m"
    rm -rf "$out"
    sync
    # shellcheck disable=SC2086
    WEIGHTOPS_HASH_CACHE=$cache /usr/bin/time -v "$b" merge -q ${FLAGS:-} $extra "$work/${m%@*}-$tag.yaml" -o "$out" 2> "$work/time-$m.txt" >/dev/null
    w=$(grep "Elapsed (wall" "$work/time-$m.txt" | awk '{print $NF}' | secs)
    u=$(grep "User time" "$work/time-$m.txt" | awk '{print $NF}')
    s=$(grep "System time" "$work/time-$m.txt" | awk '{print $NF}')
    k=$(grep "Maximum resident" "$work/time-$m.txt" | awk '{print $NF}')
    walls[$m]="${walls[$m]:-} $w"
    cpus[$m]="${cpus[$m]:-} $(echo "$u + $s" | bc)"
    rsss[$m]="${rsss[$m]:-} $((k / 1024))"
    rm -rf "$out"
  done
done
floor=$(echo "$floors" | median)
echo "size=$size hidden=$hidden reps=$reps floor (cat inputs + write output with fsync): [${floors# }] median ${floor}s"
for m in $runs; do
  w=$(echo "${walls[$m]}" | median)
  printf '%-21s wall %6.2fs  cpu %6.2fs  peak RSS %5d MiB  ratio %5.2f  (walls [%s])\n' "$m" "$w" "$(echo "${cpus[$m]}" | median)" \
    "$(echo "${rsss[$m]}" | median)" "$(echo "scale=3; $w / $floor" | bc)" "${walls[$m]# }"
done
