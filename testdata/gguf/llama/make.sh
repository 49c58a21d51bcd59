#!/bin/sh
# Makes the files of testdata/gguf/llama with a real llama.cpp build, from
# GGUF files weightops writes of seeded synth models. Run once from the
# repository root; tests only read the results. Made with Debian's
# llama.cpp-tools 1:0.7.0+dfsg-2 (ggml 0.27.0, CPU backend).
#
#   LLAMA_RUN  a command prefix that runs llama.cpp's tools (default: none,
#              llama-quantize and llama-completion on PATH)
#
# sha256.txt        SHA-256 of llama-quantize --pure's output for each type,
#                   from our F32 and F16 GGUF of the same model (tests check
#                   that weightops' own conversion is the same file)
# small-q4_k.gguf   llama-quantize --pure q4_k of a 1-layer model (hidden 256,
#                   vocabulary 256, no tokenizer), compared byte for byte
# prompt-ids.txt    llama.cpp's tokenization of the prompt (llama-bpe BPE)
# generate.txt      llama-completion's greedy output on the F32 model
#                   (stdout: the prompt, 24 new tokens, a blank line)
set -eu
out=testdata/gguf/llama
run=${LLAMA_RUN:-}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
go build -o "$T/weightops" ./cmd/weightops
W=$T/weightops
types="q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q6_k"
prompt='The quick brown fox, in 2026, said: "naïve café 🙂"'

for dt in f32 f16; do
	$W synth -q -o "$T/$dt/m" --hidden 256 --vocab 3259 --size 20MiB --dtype $dt --seed 7
	cp testdata/tokenizer/llama3/tokenizer.json "$T/$dt/m/"
	$W convert -q "$T/$dt/m" "$T/$dt/m.gguf" --type $dt
	for t in $types; do
		$run llama-quantize --pure "$T/$dt/m.gguf" "$T/$dt/$t.gguf" $t 2 >/dev/null 2>&1
	done
done
(cd "$T" && for dt in f32 f16; do for t in $types; do sha256sum "$dt/$t.gguf"; done; done) >"$out/sha256.txt"

$W synth -q -o "$T/small" --hidden 256 --vocab 256 --size 3MiB --dtype f32 --seed 3
$W convert -q "$T/small" "$T/small.gguf" --type f32 --no-vocab
$run llama-quantize --pure "$T/small.gguf" "$out/small-q4_k.gguf" q4_k 2 >/dev/null 2>&1

$run llama-completion -m "$T/f32/m.gguf" -p "$prompt" -n 24 --temp 0 -no-cnv -t 2 \
	--verbose-prompt >"$out/generate.txt" 2>"$T/log.txt"
grep -a -E ' I +[0-9]+ -> ' "$T/log.txt" | awk '{print $3}' | tr '\n' ' ' | sed 's/ $/\n/' >"$out/prompt-ids.txt"
