using System.Text.Json;
using MoeServer.Kernels.Model;

namespace MoeServer.Kernels.Residency;

/// <summary>One batch segment of a traced step: a sequence's rows (a prefill chunk or one decode token).</summary>
public sealed record TraceSegment(string SequenceId, int Rows, bool Prefill);

/// <summary>
/// One engine step's routing: the batch's segments in row order and, per sparse layer, every row's experts
/// (<c>ExpertsOfRow[layer][row]</c>; an empty array for a dense layer).
/// </summary>
public sealed record TraceStep(long Step, TraceSegment[] Segments, int[][][] ExpertsOfRow);

/// <summary>
/// A recorded routing trace: what the experts of every layer were asked to do, step by step, by which sequences.
/// Recorded by the engine (many concurrent requests), replayed by the residency simulator and the bench. Appending
/// and snapshots are thread-safe (the compute thread appends while the scheduler may stop the recording).
/// </summary>
public sealed class RoutingTrace(string model, int layers, int experts)
{
    private readonly List<TraceStep> _steps = [];
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string Model => model;
    public int Layers => layers;
    public int Experts => experts;

    public IReadOnlyList<TraceStep> Steps
    {
        get
        {
            lock (_steps) return _steps.ToArray();
        }
    }

    public void Append(TraceStep step)
    {
        int rows = step.Segments.Sum(s => s.Rows);
        if (step.ExpertsOfRow.Length != layers || step.ExpertsOfRow.Any(l => l.Length != 0 && l.Length != rows))
            throw new ArgumentException($"step {step.Step}: expected {layers} layers of {rows} rows", nameof(step));
        lock (_steps) _steps.Add(step);
    }

    /// <summary>The expert uses as an expert node sees them: per step, per layer, each expert the batch needs once
    /// (ascending), one after another.</summary>
    public IReadOnlyList<ExpertId> ExpertUses()
    {
        var uses = new List<ExpertId>();
        foreach (var step in Steps)
            for (int l = 0; l < layers; l++)
                foreach (int e in ExpertsNeeded(step, l))
                    uses.Add(new ExpertId(l, e));
        return uses;
    }

    /// <summary>Every step's needed experts per layer, for the step-structured replay.</summary>
    public IReadOnlyList<StepUses> StepUses() =>
        Steps.Select(s => new StepUses(s.Step, Enumerable.Range(0, layers).Select(l => ExpertsNeeded(s, l).ToArray()).ToArray())).ToList();

    /// <summary>The experts of <paramref name="layer"/> the step's batch needs, each once, ascending.</summary>
    private static IEnumerable<int> ExpertsNeeded(TraceStep step, int layer) =>
        step.ExpertsOfRow[layer].SelectMany(r => r).Distinct().Order();

    /// <summary>For every position of <see cref="ExpertUses"/>, the position of the last use of the same step.</summary>
    public long[] StepEnds()
    {
        var ends = new List<long>();
        foreach (var step in Steps)
        {
            int count = 0;
            for (int l = 0; l < layers; l++) count += ExpertsNeeded(step, l).Count();
            long end = ends.Count + count - 1;
            for (int i = 0; i < count; i++) ends.Add(end);
        }
        return ends.ToArray();
    }

    /// <summary>
    /// Per layer, how often a sequence's token was routed to exactly the experts of the same sequence's previous
    /// token: the "keeps its last expert" prediction a scheduler can make for a request before its next step runs.
    /// </summary>
    public double[] KeepsLastExperts()
    {
        var kept = new long[layers];
        var pairs = new long[layers];
        var last = new Dictionary<string, int[]?[]>();
        foreach (var step in Steps)
        {
            int row = 0;
            foreach (var seg in step.Segments)
            {
                if (!last.TryGetValue(seg.SequenceId, out var previous)) last[seg.SequenceId] = previous = new int[]?[layers];
                for (int r = row; r < row + seg.Rows; r++)
                {
                    for (int l = 0; l < layers; l++)
                    {
                        if (step.ExpertsOfRow[l].Length == 0) continue;
                        var now = step.ExpertsOfRow[l][r];
                        if (previous[l] is { } p)
                        {
                            pairs[l]++;
                            if (p.Order().SequenceEqual(now.Order())) kept[l]++;
                        }
                        previous[l] = now;
                    }
                }
                row += seg.Rows;
            }
        }
        return kept.Select((k, l) => pairs[l] == 0 ? 0 : (double)k / pairs[l]).ToArray();
    }

    /// <summary>JSON lines: a header, then one line per step.</summary>
    public void Save(string path)
    {
        using var w = new StreamWriter(path);
        w.WriteLine(JsonSerializer.Serialize(new Header(model, layers, experts), Json));
        foreach (var s in Steps) w.WriteLine(JsonSerializer.Serialize(s, Json));
    }

    public static RoutingTrace Load(string path)
    {
        using var r = new StreamReader(path);
        var header = JsonSerializer.Deserialize<Header>(r.ReadLine() ?? throw new InvalidDataException($"{path} is empty"), Json)
                     ?? throw new InvalidDataException($"{path}: no trace header");
        var trace = new RoutingTrace(header.Model, header.Layers, header.Experts);
        int line = 1;
        while (r.ReadLine() is { } text)
        {
            line++;
            if (text.Length == 0) continue;
            var step = JsonSerializer.Deserialize<TraceStep>(text, Json) ?? throw new InvalidDataException($"{path}:{line}: not a trace step");
            trace.Append(step);
        }
        return trace;
    }

    private sealed record Header(string Model, int Layers, int Experts);
}
