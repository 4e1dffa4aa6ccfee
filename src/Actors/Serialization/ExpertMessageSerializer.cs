using MoeServer.Kernels.Model;
using System.Runtime.InteropServices;
using System.Runtime.Serialization;
using System.Text;
using Akka.Actor;
using Akka.Serialization;
using MoeServer.Actors.Cluster;
using MoeServer.Actors.Experts;
using MoeServer.Kernels.Native;

namespace MoeServer.Actors.Serialization;

/// <summary>
/// Binary format of every message that crosses nodes: a version byte, the fields, and activations as a
/// dtype + shape header followed by the raw little-endian element bytes (f32, or bf16 when
/// <c>moe.experts.wire-dtype = bf16</c>). A message larger than the transport's frame throws
/// <see cref="MessageTooLargeException"/> naming it, rather than being dropped by the transport.
/// </summary>
public sealed class ExpertMessageSerializer : SerializerWithStringManifest
{
    private const byte Version = 2; // 2: RunBatch carries the trace context after its request ids
    /// <summary>Room the remoting envelope needs around our payload (addresses, manifests, sequence numbers).</summary>
    public const int EnvelopeHeadroom = 16 * 1024;

    internal const string RunBatchManifest = "RB";
    internal const string BatchDoneManifest = "BD";
    internal const string BatchFailedManifest = "BF";
    internal const string PingManifest = "PI";
    internal const string AnnounceManifest = "AN";
    internal const string PongManifest = "PO";
    internal const string GetFingerprintManifest = "FG";
    internal const string FingerprintManifest = "FP";

    private readonly WireDType _wire;
    private readonly long _maxFrame;

    public ExpertMessageSerializer(ExtendedActorSystem system) : base(system)
    {
        var c = system.Settings.Config;
        _wire = ExpertOptions.ParseWire(c.GetString("moe.experts.wire-dtype", "f32"));
        _maxFrame = c.GetByteSize("akka.remote.dot-netty.tcp.maximum-frame-size") ?? 128000;
    }

    public override int Identifier => 7311;

    /// <summary>The wire element type this serializer writes activations in.</summary>
    public WireDType WireDType => _wire;

    public override string Manifest(object o) => o switch
    {
        ExpertProtocol.RunBatch => RunBatchManifest,
        ExpertProtocol.BatchDone => BatchDoneManifest,
        ExpertProtocol.BatchFailed => BatchFailedManifest,
        ExpertProtocol.Ping => PingManifest,
        ExpertProtocol.AnnounceStep => AnnounceManifest,
        ExpertProtocol.Pong => PongManifest,
        CheckpointProtocol.GetFingerprint => GetFingerprintManifest,
        CheckpointProtocol.Fingerprint => FingerprintManifest,
        _ => throw new ArgumentException($"{o.GetType()} is not a message of {nameof(ExpertMessageSerializer)}", nameof(o)),
    };

    /// <summary>Bytes a message will take on the wire (activations dominate).</summary>
    public static long EstimateBytes(ActivationBlock block, WireDType wire) =>
        64 + (long)block.Rows * block.Width * (wire == WireDType.BF16 ? 2 : 4);

    public override byte[] ToBinary(object obj)
    {
        using var ms = new MemoryStream(obj is ExpertProtocol.RunBatch rb ? (int)Math.Min(int.MaxValue, EstimateBytes(rb.Input, _wire) + 256) : 256);
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Version);
            switch (obj)
            {
                case ExpertProtocol.RunBatch m:
                    CheckFits(m.Input, $"RunBatch for expert {m.Expert} (step {m.StepId}, {m.Input.Rows} rows)");
                    WriteExpert(w, m.Expert);
                    w.Write(m.StepId);
                    w.Write(m.RequestIds.Length);
                    foreach (var id in m.RequestIds) w.Write(id);
                    w.Write(m.TraceParent ?? "");
                    WriteBlock(w, m.Input);
                    break;
                case ExpertProtocol.BatchDone m:
                    CheckFits(m.Output, $"BatchDone of expert {m.Expert} (step {m.StepId}, {m.Output.Rows} rows)");
                    WriteExpert(w, m.Expert);
                    w.Write(m.StepId);
                    w.Write(m.ComputeMs);
                    WriteBlock(w, m.Output);
                    break;
                case ExpertProtocol.BatchFailed m:
                    WriteExpert(w, m.Expert);
                    w.Write(m.StepId);
                    w.Write(m.Reason);
                    break;
                case ExpertProtocol.Ping m:
                    WriteExpert(w, m.Expert);
                    break;
                case ExpertProtocol.AnnounceStep m:
                    w.Write(m.StepId);
                    w.Write(m.ExpertsByLayer.Length);
                    foreach (var layer in m.ExpertsByLayer)
                    {
                        w.Write(layer.Length);
                        foreach (int e in layer) w.Write(e);
                    }
                    break;
                case ExpertProtocol.Pong m:
                    WriteExpert(w, m.Expert);
                    w.Write(m.Node);
                    w.Write(m.Loaded);
                    w.Write(m.Error is not null);
                    if (m.Error is not null) w.Write(m.Error);
                    break;
                case CheckpointProtocol.GetFingerprint:
                    break;
                case CheckpointProtocol.Fingerprint m:
                    w.Write(m.Value);
                    w.Write(m.Node);
                    w.Write(m.ModelDir);
                    break;
                default:
                    throw new ArgumentException($"{obj.GetType()} is not a message of {nameof(ExpertMessageSerializer)}", nameof(obj));
            }
        }
        if (ms.Length + EnvelopeHeadroom > _maxFrame)
            throw new MessageTooLargeException(
                $"{obj.GetType().Name} is {ms.Length} bytes, over the remote frame of {_maxFrame} bytes " +
                "(akka.remote.dot-netty.tcp.maximum-frame-size); lower moe.scheduler.max-batch-tokens or raise the frame size");
        return ms.ToArray();
    }

    private void CheckFits(ActivationBlock block, string what)
    {
        long bytes = EstimateBytes(block, _wire) + EnvelopeHeadroom;
        if (bytes > _maxFrame)
            throw new MessageTooLargeException(
                $"{what} needs {bytes} bytes, over the remote frame of {_maxFrame} bytes " +
                "(akka.remote.dot-netty.tcp.maximum-frame-size); lower moe.scheduler.max-batch-tokens or raise the frame size");
    }

    /// <summary>
    /// Decodes a message, or throws <see cref="SerializationException"/> when the bytes are not a whole, well-formed
    /// message of the manifest's kind (truncated, corrupted header, trailing bytes): never a half-read message, and
    /// never an allocation sized by a corrupted header.
    /// </summary>
    public override object FromBinary(byte[] bytes, string manifest)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        using var r = new BinaryReader(new MemoryStream(bytes, writable: false), new UTF8Encoding(false, throwOnInvalidBytes: true));
        object message;
        try
        {
            message = Decode(r, manifest);
        }
        catch (Exception ex) when (ex is EndOfStreamException or IOException or FormatException or OverflowException
                                       or ArgumentException or DecoderFallbackException)
        {
            throw new SerializationException($"expert message '{manifest}' of {bytes.Length} bytes is malformed: {ex.Message}", ex);
        }
        long rest = Remaining(r);
        if (rest != 0)
            throw new SerializationException($"expert message '{manifest}' has {rest} unexpected bytes after its end");
        return message;
    }

    private static long Remaining(BinaryReader r) => r.BaseStream.Length - r.BaseStream.Position;

    private static object Decode(BinaryReader r, string manifest)
    {
        byte v = r.ReadByte();
        if (v != Version) throw new SerializationException($"expert message version {v} is not supported (expected {Version})");
        switch (manifest)
        {
            case RunBatchManifest:
            {
                var expert = ReadExpert(r);
                long step = r.ReadInt64();
                int n = r.ReadInt32();
                // Every id takes at least its length byte.
                if (n < 0 || n > Remaining(r)) throw new SerializationException($"RunBatch with {n} request ids in {Remaining(r)} bytes");
                var ids = new string[n];
                for (int i = 0; i < n; i++) ids[i] = r.ReadString();
                string trace = r.ReadString();
                return new ExpertProtocol.RunBatch(expert, step, ReadBlock(r), ids, trace.Length == 0 ? null : trace);
            }
            case BatchDoneManifest:
            {
                var expert = ReadExpert(r);
                long step = r.ReadInt64();
                double ms = r.ReadDouble();
                return new ExpertProtocol.BatchDone(expert, step, ReadBlock(r), ms);
            }
            case BatchFailedManifest:
                return new ExpertProtocol.BatchFailed(ReadExpert(r), r.ReadInt64(), r.ReadString());
            case PingManifest:
                return new ExpertProtocol.Ping(ReadExpert(r));
            case AnnounceManifest:
            {
                long step = r.ReadInt64();
                int layers = r.ReadInt32();
                if (layers < 0 || layers > Remaining(r) / 4) throw new SerializationException($"AnnounceStep with {layers} layers in {Remaining(r)} bytes");
                var experts = new int[layers][];
                for (int l = 0; l < layers; l++)
                {
                    int n = r.ReadInt32();
                    if (n < 0 || n > Remaining(r) / 4) throw new SerializationException($"AnnounceStep layer {l} with {n} experts in {Remaining(r)} bytes");
                    experts[l] = new int[n];
                    for (int i = 0; i < n; i++) experts[l][i] = r.ReadInt32();
                }
                return new ExpertProtocol.AnnounceStep(step, experts);
            }
            case PongManifest:
            {
                var expert = ReadExpert(r);
                string node = r.ReadString();
                bool loaded = r.ReadBoolean();
                string? error = r.ReadBoolean() ? r.ReadString() : null;
                return new ExpertProtocol.Pong(expert, node, loaded, error);
            }
            case GetFingerprintManifest:
                return new CheckpointProtocol.GetFingerprint();
            case FingerprintManifest:
                return new CheckpointProtocol.Fingerprint(r.ReadString(), r.ReadString(), r.ReadString());
            default:
                throw new SerializationException($"unknown expert message manifest '{manifest}'");
        }
    }

    private static void WriteExpert(BinaryWriter w, ExpertId e)
    {
        w.Write(e.Layer);
        w.Write(e.Expert);
    }

    private static ExpertId ReadExpert(BinaryReader r) => new(r.ReadInt32(), r.ReadInt32());

    private void WriteBlock(BinaryWriter w, ActivationBlock b)
    {
        w.Write((byte)_wire);
        w.Write((byte)2); // rank
        w.Write(b.Rows);
        w.Write(b.Width);
        var data = b.Data.AsSpan(0, b.Rows * b.Width);
        if (_wire == WireDType.F32)
        {
            w.Write(MemoryMarshal.AsBytes(data));
            return;
        }
        var half = new ushort[data.Length];
        Bf16Convert.ToBf16(data, half);
        w.Write(MemoryMarshal.AsBytes(half.AsSpan()));
    }

    private static ActivationBlock ReadBlock(BinaryReader r)
    {
        var dtype = (WireDType)r.ReadByte();
        int rank = r.ReadByte();
        if (rank != 2) throw new SerializationException($"activation block of rank {rank}; expected 2");
        int rows = r.ReadInt32(), width = r.ReadInt32();
        if (rows < 0 || width < 0) throw new SerializationException($"activation block with shape [{rows}, {width}]");
        int elementBytes = dtype switch
        {
            WireDType.F32 => 4,
            WireDType.BF16 => 2,
            _ => throw new SerializationException($"activation block of unknown dtype {(byte)dtype}"),
        };
        long need = (long)rows * width * elementBytes;
        if (need > Remaining(r))
            throw new SerializationException($"activation block [{rows}, {width}] needs {need} bytes of data, the message has {Remaining(r)}");
        var data = new float[(long)rows * width];
        switch (dtype)
        {
            case WireDType.F32:
                ReadExactly(r, MemoryMarshal.AsBytes(data.AsSpan()));
                break;
            case WireDType.BF16:
                var half = new ushort[data.Length];
                ReadExactly(r, MemoryMarshal.AsBytes(half.AsSpan()));
                Bf16Convert.ToSingle(half, data);
                break;
            default:
                throw new SerializationException($"activation block of unknown dtype {(byte)dtype}");
        }
        return new ActivationBlock(rows, width, data);
    }

    private static void ReadExactly(BinaryReader r, Span<byte> into)
    {
        if (r.Read(into) != into.Length)
            throw new SerializationException($"activation block is truncated: expected {into.Length} bytes of data");
    }
}
