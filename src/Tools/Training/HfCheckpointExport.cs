using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Formats;
using MoeServer.Kernels.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeServer.Tools.Training;

/// <summary>Writes a trained model as an HF checkpoint: config.json, model.safetensors and the tokenizer files.</summary>
public static class HfCheckpointExport
{
    public static void Write(MoeTrainingModel model, string dir, TensorDType dtype, string tokenizerDir)
    {
        Directory.CreateDirectory(dir);
        var cfg = model.Config with { TorchDtype = dtype == TensorDType.BF16 ? "bfloat16" : "float32" };
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJson());
        var tensors = new List<TensorData>();
        using (torch.no_grad())
        {
            foreach (var (name, value) in model.HfTensors())
            {
                using var cpu = value.detach().to(ScalarType.Float32).cpu().contiguous();
                tensors.Add(new TensorData(name, dtype, cpu.shape, FloatEncoding.Encode(TorchInterop.ToFloatArray(cpu), dtype)));
            }
        }
        SafetensorsWriter.WriteFile(Path.Combine(dir, "model.safetensors"), tensors);
        foreach (string file in new[] { "tokenizer.json", "tokenizer_config.json" })
        {
            string from = Path.Combine(tokenizerDir, file);
            if (File.Exists(from)) File.Copy(from, Path.Combine(dir, file), overwrite: true);
        }
    }
}
