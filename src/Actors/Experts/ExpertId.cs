using System.Globalization;

namespace MoeServer.Actors.Experts;

/// <summary>One routed expert of one layer; its sharded entity id is <c>"{layer}.{expert}"</c>.</summary>
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

/// <summary>Messages routed to an expert entity by the shard region.</summary>
public interface IWithExpertId
{
    ExpertId Expert { get; }
}
