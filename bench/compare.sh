#!/usr/bin/env bash
# Side-by-side benchmark of two weightops binaries on the streaming
# commands: each command runs with OLD and NEW alternately, REPEAT times,
# on three synthetic BF16 checkpoints of SIZE; the table gives the median
# wall time, CPU seconds and peak RSS of each, and NEW/OLD ratios, then
# the command's I/O floor measured in the same rounds (cat of what it
# reads, then writing as many bytes as it wrote with fsync) and NEW's
# ratio to it. Use it to show a change made nothing slower or bigger.
# HIDDEN=4096 gives LLaMA-7B's widths (default 1024); CMDS="diff quantize"
# runs only those commands. Every timed command starts after a sync, so no
# deleted output's discards or writeback are left for its fsync to wait on.
#   bash bench/compare.sh OLD_BIN NEW_BIN [SIZE] [REPEAT] [WORKDIR]
set -euo pipefail
export WEIGHTOPS_HASH_CACHE=off # hashing cold, as on fresh inputs
old=$(realpath "$1")
new=$(realpath "$2")
size=${3:-1GiB}
hidden=${HIDDEN:-1024}
repeat=${4:-3}
work=${5:-/tmp/weightops-bench-compare}
mkdir -p "$work"
cd "$work"
for i in 1 2 3; do
  [ -f "m$i-$size-h$hidden.safetensors" ] || "$new" synth -q --size "$size" --hidden "$hidden" --seed "$i" "m$i-$size-h$hidden.safetensors" >/dev/null
done
cat > "recipe-$size-h$hidden.yaml" <<YAML
merge_method: breadcrumbs
base_model: m1-$size-h$hidden.safetensors
models:
  - model: m2-$size-h$hidden.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
  - model: m3-$size-h$hidden.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
YAML
m1=m1-$size-h$hidden.safetensors m2=m2-$size-h$hidden.safetensors m3=m3-$size-h$hidden.safetensors
# A sparse whole-model patch for patch apply (made once, by NEW).
[ -f "bc-$size-h$hidden.wpatch" ] || "$new" diff -q "$m2" "$m1" --sparsify breadcrumbs --density 0.1 -o "bc-$size-h$hidden.wpatch" >/dev/null
# The model patched with it, for patch remove (made once, by NEW).
[ -f "p-$size-h$hidden.safetensors" ] || "$new" patch apply -q "$m1" "bc-$size-h$hidden.wpatch" -o "p-$size-h$hidden.safetensors" >/dev/null
declare -A cmds=(
  [merge]="merge -q recipe-$size-h$hidden.yaml -o OUT/merged"
  [convert]="convert -q $m1 OUT/c.safetensors"
  [convert-f32]="convert -q --dtype f32 $m1 OUT/c.safetensors"
  [diff]="diff -q $m2 $m1 -o OUT/tv.safetensors"
  [diff-wpatch]="diff -q $m2 $m1 --sparsify breadcrumbs --density 0.1 -o OUT/tv.wpatch"
  [add]="add -q $m1 $m2 --lambda 0.5 -o OUT/add.safetensors"
  [interpolate]="interpolate -q $m1 $m2 --alpha 0.3 -o OUT/i.safetensors"
  [patch-apply]="patch apply -q $m1 bc-$size-h$hidden.wpatch -o OUT/p.safetensors"
  [patch-remove]="patch remove -q p-$size-h$hidden.safetensors bc-$size-h$hidden.wpatch -o OUT/r.safetensors"
  [quantize]="quantize -q $m1 --bits 4 -o OUT/q"
  [inspect-stats]="inspect -q --stats --json $m1"
  [check]="check -q $m1 --reference $m2 --max-abs-diff 100"
)
# CMDS picks commands (default: all, in this order).
read -r -a order <<< "${CMDS:-merge convert convert-f32 diff diff-wpatch add interpolate patch-apply patch-remove quantize inspect-stats check}"
# The inputs each command reads, for its I/O floor.
declare -A reads=([merge]="$m1 $m2 $m3" [diff]="$m1 $m2" [diff-wpatch]="$m1 $m2" [add]="$m1 $m2" [interpolate]="$m1 $m2" [patch-apply]="$m1 bc-$size-h$hidden.wpatch" [patch-remove]="p-$size-h$hidden.safetensors bc-$size-h$hidden.wpatch" [check]="$m1 $m2")
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() { # bin name → "wall cpu rss_mib"; leaves the output's size in outbytes.txt
  local bin=$1 name=$2
  rm -rf OUT && mkdir OUT
  sync # the last output's discards and writeback settle outside the timing
  cat "$m1" "$m2" "$m3" > /dev/null # the same warm page cache for every run
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e %U %S %M" -o time.txt "$bin" ${cmds[$name]} > /dev/null
  du -sb OUT | cut -f1 > outbytes.txt
  awk '{printf "%s %.2f %d\n", $1, $2+$3, $4/1024}' time.txt
}
floor() { # name → seconds to cat its inputs and write its output's bytes with fsync
  local t0 t1 mb
  mb=$(( $(cat outbytes.txt) / 1048576 ))
  # Random bytes, not zeros: this VM's disk takes zero blocks down another,
  # slower and erratic, path (see floor.sh).
  if [ "$mb" -gt 0 ] && [ "$(stat -c %s floor-src.bin 2>/dev/null || echo 0)" -lt $((mb * 1048576)) ]; then
    head -c $((mb * 1048576)) /dev/urandom > floor-src.bin
  fi
  cat floor-src.bin > /dev/null 2>&1 || true
  sync
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  cat ${reads[$1]:-$m1} > /dev/null
  [ "$mb" -gt 0 ] && dd if=floor-src.bin of=floor.out bs=1M count="$mb" conv=fsync status=none
  t1=$(date +%s.%N)
  rm -f floor.out
  echo "$t1 - $t0" | bc
}
printf "%-14s %9s %9s %7s | %9s %9s %7s | %6s %6s %6s | %7s %6s\n" command old_wall old_cpu old_rss new_wall new_cpu new_rss wall× cpu× rss× floor new/fl
for name in "${order[@]}"; do
  : > old.txt; : > new.txt; : > floor.txt
  for r in $(seq "$repeat"); do
    measure "$old" "$name" >> old.txt
    measure "$new" "$name" >> new.txt
    floor "$name" >> floor.txt
  done
  fl=$(median < floor.txt)
  ow=$(cut -d' ' -f1 old.txt | median); oc=$(cut -d' ' -f2 old.txt | median); orss=$(cut -d' ' -f3 old.txt | median)
  nw=$(cut -d' ' -f1 new.txt | median); nc=$(cut -d' ' -f2 new.txt | median); nrss=$(cut -d' ' -f3 new.txt | median)
  printf "%-14s %8.2fs %8.2fs %6dM | %8.2fs %8.2fs %6dM | %6.2f %6.2f %6.2f | %6.2fs %6.2f\n" "$name" "$ow" "$oc" "$orss" "$nw" "$nc" "$nrss" \
    "$(echo "$nw / $ow" | bc -l)" "$(echo "$nc / $oc" | bc -l)" "$(echo "$nrss / $orss" | bc -l)" "$fl" "$(echo "$nw / $fl" | bc -l)"
done
rm -rf OUT
