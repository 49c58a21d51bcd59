#!/bin/sh
# Makes testdata/tokenizer/spm with SentencePiece's own tools (Debian's
# sentencepiece 0.1.97: apt-get install sentencepiece), run once from the
# repository root: a small BPE tokenizer.model trained the way LLaMA's was
# set up (BPE, byte fallback, identity normalization, whitespace kept,
# digits split), on the GPL-3 text Debian ships, and spm_encode's ids for
# every line of texts.txt (ids.txt, one line each). Tests only read the
# results.
set -eu
out=testdata/tokenizer/spm
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
spm_train --input=/usr/share/common-licenses/GPL-3 --model_prefix="$T/m" \
	--model_type=bpe --vocab_size=600 --byte_fallback=true \
	--normalization_rule_name=identity --remove_extra_whitespaces=false \
	--split_digits=true --character_coverage=1.0 --add_dummy_prefix=true \
	--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --seed_sentencepiece_size=100000 \
	--minloglevel=2 --num_threads=1 >/dev/null 2>&1
cp "$T/m.model" "$out/tokenizer.model"
spm_encode --model="$out/tokenizer.model" --output_format=id <"$out/texts.txt" >"$out/ids.txt"
