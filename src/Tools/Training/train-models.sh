#!/usr/bin/env bash
# The one-off training of the project's own models (not part of CI), on the 2-core machine, otherwise idle:
#   (a) readme_moe: router-decoupled MoE, 8 experts top-1 + permanent expert, decoupled router 64 x 2 blocks
#   (b) mixtral:    layer-wise MoE of the same total size (8 experts x ffn 416, top-2)
#   (c) dense:      Llama-style (mixtral format with one always-chosen expert) with (a)'s active parameter count:
#                   ffn 835 gives 5.45M parameters, what one token of (a) uses (backbone, its experts, the router)
# Equal token budgets: STEPS x 16 x 128 tokens each (default 3000 steps = 6.1M tokens, ~4.4 epochs, ~40 min each).
# Every run is resumable: run the script again and each model goes on from its last checkpoint (every 200 steps).
# Then model cards (held-out perplexity of all three, expert usage, samples) are written next to (a) and (b).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${OUT:-$root/models}"
steps="${STEPS:-3000}"
work="${WORK:-/work/training}"
cd "$root"
[ -f models/corpus/train.txt ] || src/Tools/Corpus/fetch-corpus.sh
dotnet build src/Tools -c Release -v q >/dev/null
tools="dotnet $root/src/Tools/bin/Release/net10.0/linux-x64/moe-tools.dll"
[ -f "$work/tokenizer/tokenizer.json" ] || $tools train-tokenizer --corpus models/corpus/train.txt --out "$work/tokenizer" --vocab 8192

common=(--train models/corpus/train.txt --held-out models/corpus/heldout-subset.txt --tokenizer "$work/tokenizer"
        --steps "$steps" --batch 16 --seq 128 --lr 3e-3 --warmup 100 --seed 1 --checkpoint-every 200 --eval-windows 40
        --hidden 256 --layers 4 --heads 4 --kv-heads 2 --resume)
train() { # name, extra args
  local name="$1"; shift
  if [ -f "$work/$name/config.json" ]; then echo "$name: done already"; return; fi
  local t0=$SECONDS
  # Training is torch alone on an idle machine: its OpenMP threads may spin between ops (the inference default,
  # PASSIVE, set by MoeServer.Kernels, is for torch ops interleaved with the native kernels).
  OMP_WAIT_POLICY=ACTIVE $tools train "${common[@]}" --out "$work/$name" "$@" 2>&1 | tee -a "$work/$name.log"
  echo "$name: $((SECONDS - t0)) s this run" | tee -a "$work/$name.log"
}
args_readme=(--arch readme_moe --experts 8 --top-k 1 --expert-size 384 --shared-expert 256
  --router-hidden 64 --router-layers 2 --router-heads 2 --router-kv-heads 1 --router-mlp 128)
args_mixtral=(--arch mixtral --experts 8 --top-k 2 --expert-size 416)
args_dense=(--arch mixtral --experts 1 --top-k 1 --expert-size 835)
train readme-moe "${args_readme[@]}"
train mixtral-moe "${args_mixtral[@]}"
train dense "${args_dense[@]}"

card() { # name, train args
  local name="$1"; shift
  local summary
  summary="$(grep -h '^steps ' "$work/$name.log" | tail -1 | awk '{printf "%s steps of 16 x 128 tokens (%.1fM tokens) in %d s at %s tokens/s on 2 cores; final training loss %s; the trainer'"'"'s held-out perplexity (first 40 windows, fp32) %s", $2, $2*16*128/1e6, $10, $8, $4, $6}')"
  $tools model-card --model "$work/$name" --held-out models/corpus/heldout-subset.txt --vocab-text models/corpus/train.txt \
    --compare "readme-moe=$work/readme-moe,mixtral-moe=$work/mixtral-moe,dense=$work/dense" \
    --training "$summary." --command "src/Tools/Training/train-models.sh   # runs: moe-tools train ${common[*]/$work/WORK} --out WORK/$name $*"
  mkdir -p "$out/$name"
  cp "$work/$name"/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,MODEL_CARD.md,model-card.json,expert-usage.png} "$out/$name/"
}
card readme-moe "${args_readme[@]}"
card mixtral-moe "${args_mixtral[@]}"
echo "models written to $out/readme-moe and $out/mixtral-moe"
