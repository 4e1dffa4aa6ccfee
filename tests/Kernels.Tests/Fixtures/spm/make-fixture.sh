#!/bin/sh
# Regenerates the SentencePiece golden fixture: a small BPE model trained by Debian's spm_train on the held-out
# corpus (byte fallback, identity normalization, whitespace kept: the settings of Llama/Mixtral tokenizers), and
# spm_encode's ids for every line of text.txt. Needs `apt-get install sentencepiece`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/../../../../models/corpus/heldout-subset.txt"
spm_train --input="$corpus" --model_prefix="$here/spm" --vocab_size=512 --model_type=bpe \
  --byte_fallback=true --normalization_rule_name=identity --remove_extra_whitespaces=false \
  --add_dummy_prefix=true --split_digits=true --allow_whitespace_only_pieces=true \
  --character_coverage=0.9995 --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 --num_threads=1 --minloglevel=2
spm_encode --model="$here/spm.model" --output_format=id < "$here/text.txt" > "$here/expected-ids.txt"
spm_encode --model="$here/spm.model" --output_format=piece < "$here/text.txt" > "$here/expected-pieces.txt"
