#!/usr/bin/env bash
# Merge methods side by side on three synthetic BF16 LLaMA-shaped
# checkpoints of SIZE each (default 1GiB, 36 blocks at the default width):
# Breadcrumbs (the reference figure of bench/merge.sh), DELLA, and a
# passthrough frankenmerge (blocks 0-23 of one model, then 12-35 of
# another). Runs are interleaved, REPS rounds (default 3); each line gives
# the wall time and peak RSS (/usr/bin/time -v) of every round, then the
# median.
#   bash bench/methods.sh [SIZE] [REPS] [WORKDIR]
set -euo pipefail
export WEIGHTOPS_HASH_CACHE=off # hashing cold, as on fresh inputs
size=${1:-1GiB}
reps=${2:-3}
work=${3:-/tmp/weightops-bench-merge}
cd "$(dirname "$0")/.."
mkdir -p "$work"
go build -o "$work/weightops" ./cmd/weightops
bin="$work/weightops"
for i in 1 2 3; do
  f="$work/m$i-$size.safetensors"
  [ -f "$f" ] || "$bin" synth -q --size "$size" --seed "$i" "$f" >/dev/null
done
cat > "$work/breadcrumbs-$size.yaml" <<YAML
merge_method: breadcrumbs
base_model: m1-$size.safetensors
models:
  - model: m2-$size.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
  - model: m3-$size.safetensors
    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}
YAML
cat > "$work/della-$size.yaml" <<YAML
merge_method: della
base_model: m1-$size.safetensors
models:
  - model: m2-$size.safetensors
    parameters: {weight: 0.5, density: 0.7, epsilon: 0.15}
  - model: m3-$size.safetensors
    parameters: {weight: 0.5, density: 0.7, epsilon: 0.15}
parameters: {lambda: 1, seed: 1}
YAML
cat > "$work/passthrough-$size.yaml" <<YAML
merge_method: passthrough
slices:
  - sources:
      - model: m2-$size.safetensors
        layer_range: [0, 24]
  - sources:
      - model: m3-$size.safetensors
        layer_range: [12, 36]
YAML
cat "$work"/m[123]-"$size".safetensors > /dev/null
declare -A walls rsss
for r in $(seq "$reps"); do
  for m in breadcrumbs della passthrough; do
    out="$work/out-$m-$size"
    rm -rf "$out"
    /usr/bin/time -v "$bin" merge -q "$work/$m-$size.yaml" -o "$out" 2> "$work/time-$m.txt" >/dev/null
    w=$(grep "Elapsed (wall" "$work/time-$m.txt" | awk '{print $NF}' | awk -F: '{ if (NF==2) print $1*60+$2; else print $1*3600+$2*60+$3 }')
    k=$(grep "Maximum resident" "$work/time-$m.txt" | awk '{print $NF}')
    walls[$m]="${walls[$m]:-} $w"
    rsss[$m]="${rsss[$m]:-} $((k / 1024))"
    rm -rf "$out"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for m in breadcrumbs della passthrough; do
  echo "$m: wall s [${walls[$m]# }] median $(echo "${walls[$m]}" | median) s; peak RSS MiB [${rsss[$m]# }] median $(echo "${rsss[$m]}" | median)"
done
