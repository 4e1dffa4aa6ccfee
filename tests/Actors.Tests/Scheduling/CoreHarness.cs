using MoeServer.Actors.Scheduling.Core;
using MoeServer.Kernels.Generation;
using MoeServer.Kernels.Model.Paging;

namespace MoeServer.Actors.Tests.Scheduling;

/// <summary>A clock the test moves by hand.</summary>
internal sealed class ManualClock : TimeProvider
{
    public DateTimeOffset Now { get; set; } = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    public override DateTimeOffset GetUtcNow() => Now;
    public void Advance(TimeSpan by) => Now += by;
}

/// <summary>
/// A "model" over paged KV memory: each step writes every segment's token ids into the blocks its block table names
/// (only into blocks no one else holds) and, where logits are asked for, reads the whole context back through the
/// block table and picks the next token as a deterministic function of it (greedy). A wrong block table, a shared
/// block that does not hold what its hash says, or a preempted sequence that is not recomputed exactly, changes the
/// tokens against <see cref="Reference"/>.
/// </summary>
internal sealed class PagedTokenModel(KvBlockPool pool, int? slidingWindow = null)
{
    private readonly Dictionary<int, (int Position, int Token)[]> _blocks = [];

    public int TokensWritten { get; private set; }

    public static int Next(IReadOnlyList<int> context)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (int t in context) h = (h ^ (uint)t) * 0x100000001B3UL;
        return 3 + (int)(h % 997);
    }

    /// <summary>The tokens greedy decoding gives without any scheduler: one contiguous context.</summary>
    public static List<int> Reference(IReadOnlyList<int> prompt, int tokens, int? window = null)
    {
        var all = prompt.ToList();
        var output = new List<int>();
        for (int i = 0; i < tokens; i++)
        {
            var ctx = window is { } w && all.Count > w ? all.GetRange(all.Count - w, w) : all;
            int t = Next(ctx);
            output.Add(t);
            all.Add(t);
        }
        return output;
    }

    /// <summary>Logits (the next token) per segment that asked for them, null for the others.</summary>
    public int?[] Run(ScheduledStep step)
    {
        int bs = step.BlockSize;
        var result = new int?[step.Segments.Length];
        for (int i = 0; i < step.Segments.Length; i++)
        {
            var seg = step.Segments[i];
            if (seg.BlockTable.Length * bs < seg.ContextLength) Assert.Fail($"{seg.RequestId}: block table of {seg.BlockTable.Length} blocks for {seg.ContextLength} positions");
            for (int j = 0; j < seg.Tokens.Length; j++)
            {
                int p = seg.StartPosition + j;
                int block = seg.BlockTable[p / bs];
                if (block == ScheduledSegment.NoBlock) Assert.Fail($"{seg.RequestId} writes position {p} into a freed block");
                if (pool.RefCount(block) != 1) Assert.Fail($"{seg.RequestId} writes position {p} into block {block}, which {pool.RefCount(block)} sequences hold");
                if (!_blocks.TryGetValue(block, out var slots)) _blocks[block] = slots = new (int, int)[bs];
                slots[p % bs] = (p, seg.Tokens[j]);
                TokensWritten++;
            }
            if (!seg.NeedsLogits) continue;
            int from = slidingWindow is { } w ? Math.Max(0, seg.ContextLength - w) : 0;
            var ctx = new List<int>(seg.ContextLength - from);
            for (int p = from; p < seg.ContextLength; p++)
            {
                int block = seg.BlockTable[p / bs];
                if (block == ScheduledSegment.NoBlock) Assert.Fail($"{seg.RequestId}: position {p} is inside the window but its block was freed");
                if (pool.RefCount(block) <= 0) Assert.Fail($"{seg.RequestId} reads block {block}, which no one holds");
                var slot = _blocks[block][p % bs];
                if (slot.Position != p) Assert.Fail($"{seg.RequestId}: block {block} holds position {slot.Position} where {p} was expected");
                ctx.Add(slot.Token);
            }
            result[i] = Next(ctx);
        }
        return result;
    }
}

/// <summary>The scheduling core with a <see cref="PagedTokenModel"/> and a fake output stage (a request stops after its
/// reply length), driven step by step; it checks the pool's bookkeeping after every call.</summary>
internal sealed class CoreHarness
{
    public CoreHarness(SchedulerCoreOptions options, int blocks, int blockSize = 4)
        : this(options, new KvBlockPool(blocks, blockSize))
    {
    }

    public CoreHarness(SchedulerCoreOptions options, KvBlockPool pool)
    {
        Pool = pool;
        Core = new SchedulerCore(options, Pool, Clock);
        Model = new PagedTokenModel(Pool, options.SlidingWindow);
    }

    public ManualClock Clock { get; } = new();
    public KvBlockPool Pool { get; }
    public SchedulerCore Core { get; }
    public PagedTokenModel Model { get; }
    public List<SchedulerEvent> Events { get; } = [];
    public Dictionary<string, List<int>> Produced { get; } = [];
    public Dictionary<string, int> ReplyLength { get; } = [];
    public Dictionary<string, int[]> Prompts { get; } = [];
    public List<ScheduledStep> Steps { get; } = [];
    /// <summary>Called with each step before its output goes back (cancel or pause inside a step, look at state).</summary>
    public Action<ScheduledStep>? DuringStep { get; set; }
    public int MaxRunning { get; private set; }
    public int MaxUsedBlocks { get; private set; }

    public IReadOnlyList<SchedulerEvent> Submit(string id, int[] prompt, int reply, int? maxTokens = null, DateTimeOffset? deadline = null,
        Kernels.Model.RoutingOverride? routing = null)
    {
        ReplyLength[id] = reply;
        Prompts[id] = prompt;
        Produced.TryAdd(id, []);
        var ev = Core.Submit(new SequenceRequest(id, prompt) { MaxTokens = maxTokens, Deadline = deadline, Routing = routing });
        return Record(ev);
    }

    public IReadOnlyList<SchedulerEvent> Record(IReadOnlyList<SchedulerEvent> events)
    {
        Events.AddRange(events);
        foreach (var t in events.OfType<TokenProduced>())
        {
            Assert.Equal(Produced[t.RequestId].Count, t.Index);
            Produced[t.RequestId].Add(t.TokenId);
        }
        Pool.CheckInvariants();
        return events;
    }

    /// <summary>Schedules one step (recording its events); null when there was nothing to run.</summary>
    public ScheduledStep? Plan()
    {
        var r = Core.Schedule();
        Record(r.Events);
        if (r.Step is { } s) Steps.Add(s);
        MaxRunning = Math.Max(MaxRunning, Core.Stats.Running);
        MaxUsedBlocks = Math.Max(MaxUsedBlocks, Pool.UsedBlocks);
        return r.Step;
    }

    /// <summary>Runs the model on a planned step and hands the output (with the output stage's finish decisions) back.</summary>
    public IReadOnlyList<SchedulerEvent> Complete(ScheduledStep step, Func<ScheduledSegment, SegmentOutput, SegmentOutput>? edit = null)
    {
        var logits = Model.Run(step);
        DuringStep?.Invoke(step);
        var outputs = step.Segments.Select((seg, i) =>
        {
            var o = new SegmentOutput(seg.RequestId);
            if (logits[i] is { } token)
            {
                int n = Produced[seg.RequestId].Count + 1;
                o = o with { SampledToken = token, Finish = n >= ReplyLength[seg.RequestId] ? new FinishDecision(FinishReason.Stop) : null };
            }
            return edit is null ? o : edit(seg, o);
        }).ToList();
        return Record(Core.Update(new StepOutput(step.StepId, outputs)));
    }

    /// <summary>One Schedule + model + Update; null when nothing was scheduled.</summary>
    public ScheduledStep? Step()
    {
        var s = Plan();
        if (s is not null) Complete(s);
        return s;
    }

    public int RunUntilIdle(int maxSteps = 200_000)
    {
        int n = 0;
        while (!Core.IsIdle)
        {
            Assert.True(n++ < maxSteps, $"not idle after {maxSteps} steps: {Core.Stats}");
            Assert.NotNull(Step());
        }
        return n;
    }

    public RequestFinished FinishedOf(string id) => Assert.Single(Events.OfType<RequestFinished>(), f => f.RequestId == id);

    public IEnumerable<T> Of<T>(string id) where T : SchedulerEvent =>
        Events.OfType<T>().Where(e => e switch
        {
            RequestAdmitted a => a.RequestId == id,
            RequestPreempted p => p.RequestId == id,
            TokenProduced t => t.RequestId == id,
            RequestFinished f => f.RequestId == id,
            RequestQueued q => q.RequestId == id,
            RequestRejected r => r.RequestId == id,
            _ => false,
        });

    /// <summary>Distinct prompts: token ids seeded by the name.</summary>
    public static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(3, 30000)).ToArray();
    }
}
