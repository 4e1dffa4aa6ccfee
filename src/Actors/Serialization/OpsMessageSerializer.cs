using System.Runtime.Serialization;
using System.Text.Json;
using Akka.Actor;
using Akka.Serialization;
using MoeServer.Actors.Ops;

namespace MoeServer.Actors.Serialization;

/// <summary>The ops messages between nodes, as UTF-8 JSON with the record's name as manifest (small, rare messages:
/// readable on the wire matters more than bytes).</summary>
public sealed class OpsMessageSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    private static readonly Dictionary<string, Type> Types = typeof(OpsProtocol).GetNestedTypes()
        .Where(t => t.IsClass && typeof(OpsProtocol.IOpsMessage).IsAssignableFrom(t)).ToDictionary(t => t.Name);

    public override int Identifier => 7312;

    public override string Manifest(object o) =>
        o is OpsProtocol.IOpsMessage ? o.GetType().Name : throw new ArgumentException($"{o.GetType()} is not an ops message", nameof(o));

    public override byte[] ToBinary(object obj) => JsonSerializer.SerializeToUtf8Bytes(obj, obj.GetType());

    public override object FromBinary(byte[] bytes, string manifest)
    {
        if (!Types.TryGetValue(manifest, out var type)) throw new SerializationException($"unknown ops message '{manifest}'");
        try
        {
            return JsonSerializer.Deserialize(bytes, type) ?? throw new SerializationException($"ops message '{manifest}' is null");
        }
        catch (JsonException ex)
        {
            throw new SerializationException($"ops message '{manifest}' of {bytes.Length} bytes is malformed: {ex.Message}", ex);
        }
    }
}
