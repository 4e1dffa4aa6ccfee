using MoeServer.Kernels.Config;
using MoeServer.Kernels.Formats;
using MoeServer.Tools;

// Offline tools: make-checkpoint, generate, perplexity, train-tokenizer, train. Output goes to stdout; progress and diagnostics to stderr.
if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(Usage.Text);
    return args.Length == 0 ? 2 : 0;
}
try
{
    return args[0] switch
    {
        "make-checkpoint" => MakeCheckpointCommand.Run(args[1..]),
        "generate" => GenerateCommand.Run(args[1..]),
        "perplexity" => PerplexityCommand.Run(args[1..]),
        "train-tokenizer" => TrainTokenizerCommand.Run(args[1..]),
        "train" => TrainCommand.Run(args[1..]),
        "model-card" => MoeServer.Tools.ModelCards.ModelCardCommand.Run(args[1..]),
        "export-gguf" => ExportGgufCommand.Run(args[1..]),
        _ => throw new UsageException($"unknown command '{args[0]}'"),
    };
}
catch (UsageException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine();
    Console.Error.WriteLine(Usage.Text);
    return 2;
}
catch (Exception e) when (e is ModelConfigException or CheckpointFormatException or IOException or ArgumentException or InvalidDataException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

internal static class Usage
{
    public const string Text = """
        usage: moe-tools COMMAND [options]

          make-checkpoint --arch mixtral|qwen2_moe|qwen3_moe|olmoe|readme_moe --preset tiny|small|bench --out DIR
                          [--seed N] [--shards K] [--dtype bf16|f32|f16] [--fused-experts]
              Writes a random-weight HF checkpoint: config.json, safetensors, tokenizer.json, tokenizer_config.json.

          generate [--model DIR] --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]
                   [--seed S] [--chat] [--chat-template chatml|mistral|FILE] [--precision bf16|f32]
              Prints only the completion. Without --model, uses models/readme-moe (the trained default model).

          perplexity --model DIR --file TEXT [--ctx N] [--precision bf16|f32]
              Perplexity with llama.cpp's protocol (non-overlapping n_ctx chunks, second half scored).

          export-gguf --model DIR --out FILE.gguf [--type f32|f16|bf16] [--per-expert] [--splits N] [--spm FILE.vocab]
              Writes the checkpoint (mixtral, qwen2_moe, qwen3_moe, olmoe) as GGUF for llama.cpp, tokenizer embedded.
              --per-expert: older Mixtral files' blk.N.ffn_gate.E.weight tensors; --splits N: FILE-00001-of-0000N.gguf...;
              --spm: a SentencePiece vocabulary (spm_train's .vocab) instead of the checkpoint's byte-level BPE.

          train-tokenizer --corpus FILE --out DIR [--vocab 8192] [--model-max-length 4096]
              Learns a byte-level BPE (ChatML special tokens) from a corpus file, one document per line
              (src/Tools/Corpus/fetch-corpus.sh writes models/corpus/train.txt), and writes tokenizer.json and
              tokenizer_config.json to DIR.

          train --train FILE --tokenizer DIR --out DIR [--arch mixtral|readme_moe] [--held-out FILE] [--steps 2000] [--batch 16] [--seq 128]
                [--lr 3e-3] [--warmup 100] [--weight-decay 0.1] [--balance 0.01] [--seed 1] [--checkpoint-every 200]
                [--eval-windows N] [--layers 4] [--hidden 256] [--heads 4] [--kv-heads 2] [--experts 8] [--top-k 2]
                [--expert-size 512] [--max-position 2048] [--untie-embeddings] [--stop-after N] [--resume]
                readme_moe: [--router-hidden 64] [--router-layers 2] [--router-heads 2] [--router-kv-heads 1]
                [--router-mlp 128] [--shared-expert 0] (top-1 by default)
              Trains a mixtral-format MoE (--experts 1: a dense Llama-style model) or a router-decoupled readme_moe
              (one small router transformer picks every layer's experts) with AdamW, warmup + cosine,
              gradient clipping and a load-balancing loss; checkpoints to OUT/resume every N steps (--resume goes on
              from there) and writes an HF checkpoint (bf16) to OUT. Prints the final loss and held-out perplexity.

          model-card --model DIR --held-out FILE --vocab-text FILE [--title T] [--training TEXT] [--window 128]
                     [--compare NAME=DIR,...]
              Measures a checkpoint as served (bf16): held-out perplexity (also of the compared models), expert usage
              per layer, how often a token keeps the previous token's expert, seeded Bible-style samples with their
              vocabulary coverage and distinct 3-gram ratio; writes DIR/MODEL_CARD.md and DIR/model-card.json.
        """;
}
