using System.Globalization;

namespace MoeServer.Kernels.Model;

/// <summary>One routed expert of one layer; as a sharded entity its id is <c>"{layer}.{expert}"</c>.</summary>
public readonly record struct ExpertId(int Layer, int Expert)
{
    public string EntityId => string.Create(CultureInfo.InvariantCulture, $"{Layer}.{Expert}");

    public override string ToString() => EntityId;

    public static ExpertId Parse(string entityId)
    {
        int dot = entityId.IndexOf('.', StringComparison.Ordinal);
        if (dot <= 0
            || !int.TryParse(entityId.AsSpan(0, dot), NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !int.TryParse(entityId.AsSpan(dot + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int expert))
            throw new FormatException($"'{entityId}' is not an expert entity id of the form \"{{layer}}.{{expert}}\"");
        return new ExpertId(layer, expert);
    }
}
