namespace MoeServer.Kernels.Formats;

/// <summary>Element types the runtime reads from safetensors.</summary>
public enum TensorDType
{
    F32,
    BF16,
    F16,
}

public static class TensorDTypes
{
    public static int ElementSize(this TensorDType t) => t == TensorDType.F32 ? 4 : 2;

    public static string ToSafetensorsName(this TensorDType t) => t switch
    {
        TensorDType.F32 => "F32",
        TensorDType.BF16 => "BF16",
        _ => "F16",
    };

    public static bool TryParse(string name, out TensorDType t)
    {
        switch (name)
        {
            case "F32": t = TensorDType.F32; return true;
            case "BF16": t = TensorDType.BF16; return true;
            case "F16": t = TensorDType.F16; return true;
            default: t = default; return false;
        }
    }
}
