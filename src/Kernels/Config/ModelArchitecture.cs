namespace MoeServer.Kernels.Config;

/// <summary>The HF model families the runtime serves (config.json <c>model_type</c>).</summary>
public enum ModelArchitecture
{
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    /// <summary><c>readme_moe</c>: one small causal router over token ids picks every layer's experts before the
    /// backbone runs (Read-ME style; src/Kernels/Model/ROUTER_DECOUPLED_SPEC.md).</summary>
    RouterDecoupled,
}

public static class ModelArchitectureNames
{
    public static string ToModelType(this ModelArchitecture a) => a switch
    {
        ModelArchitecture.Mixtral => "mixtral",
        ModelArchitecture.Qwen2Moe => "qwen2_moe",
        ModelArchitecture.Qwen3Moe => "qwen3_moe",
        ModelArchitecture.Olmoe => "olmoe",
        ModelArchitecture.RouterDecoupled => "readme_moe",
        _ => throw new ArgumentOutOfRangeException(nameof(a)),
    };

    public static bool TryParse(string modelType, out ModelArchitecture arch)
    {
        switch (modelType)
        {
            case "mixtral": arch = ModelArchitecture.Mixtral; return true;
            case "qwen2_moe": arch = ModelArchitecture.Qwen2Moe; return true;
            case "qwen3_moe": arch = ModelArchitecture.Qwen3Moe; return true;
            case "olmoe": arch = ModelArchitecture.Olmoe; return true;
            case "readme_moe": arch = ModelArchitecture.RouterDecoupled; return true;
            default: arch = default; return false;
        }
    }
}
