#!/usr/bin/env bash
# eval-lm against llama.cpp's llama-bench on the same model and work: a
# 98.7M-parameter synthetic LLaMA (synth --hidden 768 --vocab 32000
# --size 400MiB: 7 layers, MLP 2048, 12 heads), 2,048 token ids scored in
# one window, 2 threads. weightops runs on the F32 checkpoint and on a BF16
# copy; llama-bench (-p 2048 -n 0 -r 1 --no-warmup) on our GGUF F32 of it.
# Runs are interleaved, REPS rounds (default 3); each line gives the pass's
# tokens/s, the process's CPU-seconds (user + system) and peak RSS
# (/usr/bin/time), then the medians. llama.cpp is not built here: put
# llama-bench on PATH or give LLAMA_RUN, a command prefix that runs it.
#   bash bench/lm.sh [REPS] [WORKDIR]
set -euo pipefail
reps=${1:-3}
work=${2:-/tmp/weightops-bench-lm}
run=${LLAMA_RUN:-}
cd "$(dirname "$0")/.."
mkdir -p "$work"
go build -o "$work/weightops" ./cmd/weightops
bin="$work/weightops"
[ -d "$work/m" ] || "$bin" synth -q -o "$work/m" --hidden 768 --vocab 32000 --size 400MiB --dtype f32 --seed 1 >/dev/null
[ -d "$work/m-bf16" ] || "$bin" convert -q "$work/m" "$work/m-bf16" --dtype bf16 >/dev/null
[ -f "$work/m.gguf" ] || "$bin" convert -q "$work/m" "$work/m.gguf" --type f32 --no-vocab >/dev/null
awk 'BEGIN { srand(1); for (i = 0; i < 2048; i++) printf "%d ", int(rand() * 32000); print "" }' >"$work/ids.txt"

have_llama=1
$run llama-bench --help >/dev/null 2>&1 || have_llama=0
[ $have_llama = 1 ] || echo "llama-bench not found: weightops only"

declare -A tps cpu rss
for r in $(seq "$reps"); do
  for who in f32 bf16 llama; do
    [ $who = llama ] && [ $have_llama = 0 ] && continue
    if [ $who = llama ]; then
      /usr/bin/time -f "%U %S %M" -o "$work/time" $run llama-bench -m "$work/m.gguf" -p 2048 -n 0 -t 2 -r 1 --no-warmup -o csv >"$work/out" 2>/dev/null
      t=$(awk -F, 'NR > 1 { gsub(/"/, "", $0); print $(NF-1) }' "$work/out" | tail -1)
    else
      model="$work/m"; [ $who = bf16 ] && model="$work/m-bf16"
      /usr/bin/time -f "%U %S %M" -o "$work/time" "$bin" eval-lm "$model" --tokens "$work/ids.txt" --threads 2 --json >"$work/out"
      t=$(sed 's/.*"tokens_per_second":\([0-9.]*\).*/\1/' "$work/out")
    fi
    read -r u s m <"$work/time"
    c=$(echo "$u + $s" | bc)
    printf "round %d %-6s %8.1f tokens/s  %6.2f CPU-s  %7d KB\n" "$r" "$who" "$t" "$c" "$m"
    tps[$who]+="$t "; cpu[$who]+="$c "; rss[$who]+="$m "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
for who in f32 bf16 llama; do
  [ -n "${tps[$who]:-}" ] || continue
  printf "median %-6s %8.1f tokens/s  %6.2f CPU-s  %7d KB\n" "$who" \
    "$(echo "${tps[$who]}" | median)" "$(echo "${cpu[$who]}" | median)" "$(echo "${rss[$who]}" | median)"
done
