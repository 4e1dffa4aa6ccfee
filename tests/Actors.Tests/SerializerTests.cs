using MoeServer.Kernels.Model;
using System.Runtime.Serialization;
using Akka.Actor;
using Akka.Configuration;
using MoeServer.Actors.Cluster;
using MoeServer.Actors.Experts;
using MoeServer.Actors.Hosting;
using MoeServer.Actors.Serialization;

namespace MoeServer.Actors.Tests;

/// <summary>Two plain ActorSystems configured like a node (the node's HOCON, local provider): f32 and bf16 wire.</summary>
public sealed class SerializerSystems : IDisposable
{
    public const long FrameBytes = 256_000;

    public SerializerSystems()
    {
        F32 = Create("f32");
        BF16 = Create("bf16");
    }

    public ActorSystem F32 { get; }
    public ActorSystem BF16 { get; }

    private static ActorSystem Create(string wire)
    {
        var settings = MoeSettings.Load(NodeRole.All, $$"""
            moe.experts.wire-dtype = {{wire}}
            akka.remote.dot-netty.tcp.maximum-frame-size = {{FrameBytes}}b
            """);
        // The node's configuration (serializers, bindings, frame size), without remoting or cluster.
        var config = ConfigurationFactory.ParseString("akka.actor.provider = local").WithFallback(settings.Hocon);
        return ActorSystem.Create("serializer-" + wire, config);
    }

    public void Dispose()
    {
        F32.Terminate().Wait(TimeSpan.FromSeconds(10));
        BF16.Terminate().Wait(TimeSpan.FromSeconds(10));
    }
}

public class SerializerTests(SerializerSystems systems) : IClassFixture<SerializerSystems>
{
    /// <summary>Values whose bits must survive the f32 wire: signed zeros, infinities, NaN payload, subnormals, extremes.</summary>
    private static readonly float[] Specials =
    [
        0f, -0f, float.PositiveInfinity, float.NegativeInfinity, BitConverter.Int32BitsToSingle(0x7FC0_1234),
        float.Epsilon, -float.Epsilon, 1e-40f, float.MaxValue, float.MinValue, 1f, -1f, 3.14159265f, 1e-7f,
    ];

    private static ActivationBlock Block(int rows, int width, int seed)
    {
        var rng = new Random(seed);
        var data = new float[rows * width];
        for (int i = 0; i < data.Length; i++)
            data[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-6, 6)));
        Specials.AsSpan(0, Math.Min(Specials.Length, data.Length)).CopyTo(data);
        return new ActivationBlock(rows, width, data);
    }

    /// <summary>One of every message that crosses nodes.</summary>
    public static IEnumerable<object> AllMessages()
    {
        yield return new ExpertProtocol.RunBatch(new ExpertId(3, 7), 42, Block(5, 64, 1), ["req-a", "req-ü✓", ""]);
        yield return new ExpertProtocol.RunBatch(new ExpertId(1, 3), 43, Block(2, 64, 4), ["traced"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        yield return new ExpertProtocol.RunBatch(new ExpertId(0, 0), 0, new ActivationBlock(0, 64, []), []);
        yield return new ExpertProtocol.BatchDone(new ExpertId(1, 2), long.MaxValue, Block(3, 64, 2), 1.25);
        yield return new ExpertProtocol.BatchFailed(new ExpertId(15, 7), 9, "expert 15.7 could not be loaded: missing tensor");
        yield return new ExpertProtocol.Ping(new ExpertId(2, 5));
        yield return new ExpertProtocol.AnnounceStep(77, [[0, 3], [], [7, 1, 5]]);
        yield return new ExpertProtocol.AnnounceStep(0, []);
        yield return new ExpertProtocol.Pong(new ExpertId(2, 5), "akka.tcp://moe@127.0.0.1:4053", true, null);
        yield return new ExpertProtocol.Pong(new ExpertId(2, 6), "akka.tcp://moe@127.0.0.1:4054", false, "weights failed to load");
        yield return new CheckpointProtocol.GetFingerprint();
        yield return new CheckpointProtocol.Fingerprint("sha256:abc123", "akka.tcp://moe@10.0.0.1:4053", "/models/tiny");
    }

    public static TheoryData<int> MessageIndexes()
    {
        var d = new TheoryData<int>();
        for (int i = 0; i < AllMessages().Count(); i++) d.Add(i);
        return d;
    }

    private static (ExpertMessageSerializer Serializer, byte[] Bytes, string Manifest) Serialize(ActorSystem system, object msg)
    {
        var serializer = Assert.IsType<ExpertMessageSerializer>(system.Serialization.FindSerializerFor(msg));
        byte[] bytes = serializer.ToBinary(msg);
        return (serializer, bytes, Akka.Serialization.Serialization.ManifestFor(serializer, msg));
    }

    private static object Deserialize(ActorSystem system, ExpertMessageSerializer serializer, byte[] bytes, string manifest) =>
        system.Serialization.Deserialize(bytes, serializer.Identifier, manifest);

    [Theory]
    [MemberData(nameof(MessageIndexes))]
    public void Every_cross_node_message_uses_the_binary_expert_serializer(int index)
    {
        var msg = AllMessages().ElementAt(index);
        foreach (var system in new[] { systems.F32, systems.BF16 })
        {
            var serializer = system.Serialization.FindSerializerFor(msg);
            Assert.IsType<ExpertMessageSerializer>(serializer);
            Assert.Equal(7311, serializer.Identifier);
        }
    }

    [Theory]
    [MemberData(nameof(MessageIndexes))]
    public void Every_message_round_trips_bit_exactly_on_the_f32_wire(int index)
    {
        var msg = AllMessages().ElementAt(index);
        var (serializer, bytes, manifest) = Serialize(systems.F32, msg);
        var back = Deserialize(systems.F32, serializer, bytes, manifest);
        AssertSameMessage(msg, back, (want, got) =>
        {
            Assert.Equal(want.Length, got.Length);
            for (int i = 0; i < want.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(want[i]) == BitConverter.SingleToInt32Bits(got[i]),
                    $"element {i}: sent {want[i]:R} (0x{BitConverter.SingleToInt32Bits(want[i]):X8}), got {got[i]:R} (0x{BitConverter.SingleToInt32Bits(got[i]):X8})");
        });
    }

    [Theory]
    [MemberData(nameof(MessageIndexes))]
    public void Every_message_round_trips_within_bf16_rounding_on_the_bf16_wire(int index)
    {
        var msg = AllMessages().ElementAt(index);
        var (serializer, bytes, manifest) = Serialize(systems.BF16, msg);
        var back = Deserialize(systems.BF16, serializer, bytes, manifest);
        AssertSameMessage(msg, back, (want, got) =>
        {
            Assert.Equal(want.Length, got.Length);
            for (int i = 0; i < want.Length; i++)
            {
                float w = want[i], g = got[i];
                if (float.IsNaN(w))
                {
                    Assert.True(float.IsNaN(g), $"element {i}: NaN came back as {g}");
                    continue;
                }
                if (float.IsInfinity(w) || w == 0)
                {
                    Assert.True(BitConverter.SingleToInt32Bits(w) == BitConverter.SingleToInt32Bits(g), $"element {i}: {w} came back as {g}");
                    continue;
                }
                // Round to nearest with 8 significant bits: off by at most half a bf16 ulp (relative 2^-8), except that
                // values beyond bf16's largest finite value round to infinity and subnormals keep fewer bits.
                if (Math.Abs(w) > 3.3895e38f) continue;
                double bound = Math.Max(Math.Abs((double)w) * Math.Pow(2, -8), Math.Pow(2, -133));
                Assert.True(Math.Abs((double)g - w) <= bound, $"element {i}: {w:R} came back as {g:R}, beyond bf16 rounding");
            }
        });
    }

    [Fact]
    public void Bf16_wire_halves_the_activation_payload()
    {
        foreach (var msg in new object[]
                 {
                     new ExpertProtocol.RunBatch(new ExpertId(1, 1), 1, Block(40, 64, 3), ["r"]),
                     new ExpertProtocol.BatchDone(new ExpertId(1, 1), 1, Block(40, 64, 4), 0.5),
                 })
        {
            int elements = 40 * 64;
            byte[] f32 = Serialize(systems.F32, msg).Bytes;
            byte[] bf16 = Serialize(systems.BF16, msg).Bytes;
            Assert.Equal(2 * elements, f32.Length - bf16.Length);
            Assert.True(bf16.Length <= f32.Length / 2 + 64, $"{msg.GetType().Name}: bf16 {bf16.Length} bytes vs f32 {f32.Length}");
        }
    }

    [Fact]
    public void A_batch_bigger_than_the_remote_frame_is_refused_naming_the_frame_size_setting()
    {
        int rows = (int)(SerializerSystems.FrameBytes / (64 * sizeof(float))) + 1;
        var big = new ExpertProtocol.RunBatch(new ExpertId(0, 1), 5, Block(rows, 64, 5), ["big"]);
        var serializer = systems.F32.Serialization.FindSerializerFor(big);
        var ex = Assert.Throws<MessageTooLargeException>(() => serializer.ToBinary(big));
        Assert.Contains("akka.remote.dot-netty.tcp.maximum-frame-size", ex.Message);
        Assert.Contains(SerializerSystems.FrameBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);

        var bigReply = new ExpertProtocol.BatchDone(new ExpertId(0, 1), 5, Block(rows, 64, 6), 1);
        ex = Assert.Throws<MessageTooLargeException>(() => serializer.ToBinary(bigReply));
        Assert.Contains("akka.remote.dot-netty.tcp.maximum-frame-size", ex.Message);

        // Half of it fits, and on the bf16 wire the whole of it fits.
        var half = new ExpertProtocol.RunBatch(new ExpertId(0, 1), 5, Block(rows / 2, 64, 7), ["half"]);
        Assert.NotEmpty(serializer.ToBinary(half));
        Assert.NotEmpty(systems.BF16.Serialization.FindSerializerFor(big).ToBinary(big));
    }

    [Theory]
    [MemberData(nameof(MessageIndexes))]
    public void Truncated_bytes_are_a_serialization_error(int index)
    {
        var msg = AllMessages().ElementAt(index);
        foreach (var system in new[] { systems.F32, systems.BF16 })
        {
            var (serializer, bytes, manifest) = Serialize(system, msg);
            for (int len = 0; len < bytes.Length; len += len < 64 ? 1 : 61)
            {
                var cut = bytes.AsSpan(0, len).ToArray();
                var ex = Record.Exception(() => Deserialize(system, serializer, cut, manifest));
                Assert.True(ex is SerializationException,
                    $"{msg.GetType().Name} cut to {len} of {bytes.Length} bytes: {(ex is null ? "decoded without error" : ex.GetType().Name + ": " + ex.Message)}");
            }
        }
    }

    [Fact]
    public void Corrupted_headers_are_a_serialization_error()
    {
        var msg = new ExpertProtocol.RunBatch(new ExpertId(3, 7), 42, Block(5, 64, 8), ["req-a", "req-b"]);
        var (serializer, bytes, manifest) = Serialize(systems.F32, msg);
        // Layout: version(1) layer(4) expert(4) step(8) count(4) ids(1+5, 1+5) trace(1+0) dtype(1) rank(1) rows(4) width(4) data.
        const int count = 1 + 4 + 4 + 8, dtype = count + 4 + 6 + 6 + 1, rank = dtype + 1, rows = rank + 1, width = rows + 4;
        // The offsets point where they should (else the corruptions below would test something else).
        Assert.Equal(2, BitConverter.ToInt32(bytes, count));
        Assert.Equal((byte)WireDType.F32, bytes[dtype]);
        Assert.Equal(2, bytes[rank]);
        Assert.Equal(5, BitConverter.ToInt32(bytes, rows));
        Assert.Equal(64, BitConverter.ToInt32(bytes, width));
        void Expect(string what, Action<byte[]> corrupt, string? m = null)
        {
            var b = (byte[])bytes.Clone();
            corrupt(b);
            var ex = Record.Exception(() => Deserialize(systems.F32, serializer, b, m ?? manifest));
            Assert.True(ex is SerializationException, $"{what}: {(ex is null ? "decoded without error" : ex.GetType().Name + ": " + ex.Message)}");
        }
        void Int(byte[] b, int at, int v) => BitConverter.TryWriteBytes(b.AsSpan(at, 4), v);

        Expect("unknown version", b => b[0] = 99);
        Expect("unknown manifest", _ => { }, "ZZ");
        Expect("manifest of another message", _ => { }, "FP");
        Expect("negative request id count", b => Int(b, count, -1));
        Expect("huge request id count", b => Int(b, count, int.MaxValue));
        Expect("unknown dtype", b => b[dtype] = 7);
        Expect("rank 3", b => b[rank] = 3);
        Expect("negative rows", b => Int(b, rows, -5));
        Expect("huge rows", b => Int(b, rows, int.MaxValue));
        Expect("huge rows and width", b =>
        {
            Int(b, rows, int.MaxValue);
            Int(b, width, int.MaxValue);
        });
        Expect("rows larger than the data", b => Int(b, rows, 6));
        Expect("rows smaller than the data (trailing bytes)", b => Int(b, rows, 4));
        var longer = bytes.Concat(new byte[] { 1, 2, 3, 4 }).ToArray();
        var trailing = Record.Exception(() => Deserialize(systems.F32, serializer, longer, manifest));
        Assert.IsType<SerializationException>(trailing);
    }

    /// <summary>Any byte of a message's header set to any of a few values: decoded to a message of the same kind, or a
    /// <see cref="SerializationException"/>; never another exception (out of memory, end of stream, overflow).</summary>
    [Theory]
    [MemberData(nameof(MessageIndexes))]
    public void Corrupted_bytes_never_fail_with_anything_but_a_serialization_error(int index)
    {
        var msg = AllMessages().ElementAt(index);
        var (serializer, bytes, manifest) = Serialize(systems.F32, msg);
        foreach (int at in Enumerable.Range(0, Math.Min(bytes.Length, 96)))
        {
            foreach (byte value in new byte[] { 0x00, 0x01, 0x7F, 0x80, 0xFF })
            {
                var b = (byte[])bytes.Clone();
                b[at] = value;
                try
                {
                    var back = Deserialize(systems.F32, serializer, b, manifest);
                    Assert.IsType(msg.GetType(), back);
                }
                catch (SerializationException)
                {
                    // refused: fine
                }
                catch (Exception ex)
                {
                    Assert.Fail($"{msg.GetType().Name} with byte {at} set to 0x{value:X2}: {ex.GetType().Name}: {ex.Message}");
                }
            }
        }
    }

    private static void AssertSameMessage(object want, object got, Action<float[], float[]> sameData)
    {
        Assert.IsType(want.GetType(), got);
        switch (want)
        {
            case ExpertProtocol.RunBatch w:
            {
                var g = (ExpertProtocol.RunBatch)got;
                Assert.Equal(w.Expert, g.Expert);
                Assert.Equal(w.StepId, g.StepId);
                Assert.Equal(w.RequestIds, g.RequestIds);
                Assert.Equal(w.TraceParent, g.TraceParent);
                Assert.Equal(w.Input.Rows, g.Input.Rows);
                Assert.Equal(w.Input.Width, g.Input.Width);
                sameData(w.Input.Data, g.Input.Data);
                break;
            }
            case ExpertProtocol.BatchDone w:
            {
                var g = (ExpertProtocol.BatchDone)got;
                Assert.Equal(w.Expert, g.Expert);
                Assert.Equal(w.StepId, g.StepId);
                Assert.Equal(w.ComputeMs, g.ComputeMs);
                Assert.Equal(w.Output.Rows, g.Output.Rows);
                Assert.Equal(w.Output.Width, g.Output.Width);
                sameData(w.Output.Data, g.Output.Data);
                break;
            }
            case ExpertProtocol.AnnounceStep w:
            {
                var g = (ExpertProtocol.AnnounceStep)got;
                Assert.Equal(w.StepId, g.StepId);
                Assert.Equal(w.ExpertsByLayer, g.ExpertsByLayer);
                break;
            }
            default:
                // Records without arrays: value equality covers every field.
                Assert.Equal(want, got);
                break;
        }
    }
}
