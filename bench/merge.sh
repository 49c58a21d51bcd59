#!/usr/bin/env bash
# Reproducible merge benchmark: three synthetic BF16 LLaMA-shaped
# checkpoints of SIZE each (default 1GiB), a Model Breadcrumbs merge over
# them (base + two models), timed against reading the inputs with cat and
# writing a file of the output's size, with peak RSS from /usr/bin/time.
#   bash bench/merge.sh [SIZE] [WORKDIR]
set -euo pipefail
export WEIGHTOPS_HASH_CACHE=off # hashing cold, as on fresh inputs
size=${1:-1GiB}
work=${2:-/tmp/weightops-bench-merge}
cd "$(dirname "$0")/.."
mkdir -p "$work"
go build -o "$work/weightops" ./cmd/weightops
bin="$work/weightops"
for i in 1 2 3; do
  f="$work/m$i-$size.safetensors"
  [ -f "$f" ] || "$bin" synth -q --size "$size" --seed "$i" "$f" >/dev/null
done
cat > "$work/recipe-$size.yaml" <<YAML
merge_method: breadcrumbs
base_model: m1-$size.safetensors
models:
  - model: m2-$size.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
  - model: m3-$size.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
YAML
out="$work/out-$size"
rm -rf "$out"
# Warm the page cache the same way for both measurements.
cat "$work"/m[123]-"$size".safetensors > /dev/null
t0=$(date +%s.%N)
cat "$work"/m[123]-"$size".safetensors > /dev/null
t1=$(date +%s.%N)
outbytes=$(stat -c %s "$work/m1-$size.safetensors")
dd if=/dev/zero of="$work/ddout" bs=1M count=$((outbytes / 1048576)) conv=fsync status=none
t2=$(date +%s.%N)
rm -f "$work/ddout"
/usr/bin/time -v "$bin" merge -q "$work/recipe-$size.yaml" -o "$out" 2> "$work/time-$size.txt" >/dev/null
merge_s=$(grep "Elapsed (wall" "$work/time-$size.txt" | awk '{print $NF}' | awk -F: '{ if (NF==2) print $1*60+$2; else print $1*3600+$2*60+$3 }')
rss_kb=$(grep "Maximum resident" "$work/time-$size.txt" | awk '{print $NF}')
cat_s=$(echo "$t1 - $t0" | bc)
write_s=$(echo "$t2 - $t1" | bc)
base_s=$(echo "$cat_s + $write_s" | bc)
echo "size=$size cat_inputs=${cat_s}s write_output=${write_s}s baseline=${base_s}s merge=${merge_s}s ratio=$(echo "scale=2; $merge_s / $base_s" | bc) peak_rss=$((rss_kb / 1024))MiB"
