using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoeServer.Kernels.Sampling;

/// <summary>
/// Chooses the next token of one sequence from its logits row and keeps the history that penalties need.
/// One instance per sequence; not thread-safe (different samplers may run on different threads at once).
/// </summary>
/// <remarks>
/// <para>Processing order (the vLLM order; see <see cref="SamplingParams"/>): logit bias; repetition penalty (prompt
/// and output tokens), frequency and presence penalties (output tokens); then either greedy argmax, or temperature,
/// top-k, top-p, min-p and a draw from what is left. Ties are broken toward the lower token id.</para>
/// <para>The reported logprob is the log-softmax of the raw model logits as passed in, before any of the above
/// (vLLM's default <c>raw_logprobs</c> mode, i.e. the model's own probability of the token).</para>
/// <para>Randomness comes from a xoshiro256** stream seeded with <see cref="Seed"/>, one draw per non-greedy token.
/// Every step that decides the token is deterministic and platform-independent (see <see cref="LogitMath"/>), so a
/// seeded sequence repeats exactly given the same logits.</para>
/// <para>Cost per call is a few vectorised passes over the row. Top-k and top-p never sort the vocabulary: they
/// collect a small set of high candidates and run partial or weighted selection on it. Scratch buffers are per
/// thread, not per sequence, so many live samplers do not each hold vocabulary-sized arrays; a call allocates
/// nothing unless top logprobs are requested.</para>
/// </remarks>
public sealed class TokenSampler
{
    /// <summary>Top-p counts a prefix whose mass is within this relative distance below p as reaching p, so float
    /// rounding at an exact boundary (p = 0.8 over probabilities 0.5, 0.3, ...) does not pull in one more token.</summary>
    private const double TopPRelativeTolerance = 1e-6;

    [ThreadStatic] private static Workspace? t_workspace;

    private readonly SamplingParams _params;
    private readonly Xoshiro256StarStar _rng;
    private readonly KeyValuePair<int, float>[] _bias;
    private readonly bool _repetitionOn;
    private readonly bool _frequencyOrPresenceOn;
    private readonly int[] _promptDistinct;
    private readonly HashSet<int> _repeated = [];
    private readonly List<int> _outputOnlyDistinct = [];
    private readonly Dictionary<int, int> _outputCounts = [];
    private readonly List<int> _output = [];
    private int _maxReferencedToken = -1;

    /// <summary>Creates the sampler of one sequence.</summary>
    /// <param name="parameters">Settings; validated here (<see cref="SamplingParams.Validate"/>).</param>
    /// <param name="promptTokenIds">The prompt, which counts for the repetition penalty only.</param>
    /// <exception cref="ArgumentException">Invalid settings (the message names the field) or a negative token id.</exception>
    public TokenSampler(SamplingParams parameters, ReadOnlySpan<int> promptTokenIds)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters.Validate();
        _params = parameters;
        Seed = parameters.Seed ?? Xoshiro256StarStar.NewRandomSeed();
        _rng = new Xoshiro256StarStar(Seed);

        _bias = parameters.LogitBias is { Count: > 0 } bias ? [.. bias] : [];
        foreach (var (token, _) in _bias) _maxReferencedToken = Math.Max(_maxReferencedToken, token);

        for (int i = 0; i < promptTokenIds.Length; i++)
        {
            if (promptTokenIds[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(promptTokenIds), $"Prompt token {i} has negative id {promptTokenIds[i]}.");
        }

        _repetitionOn = parameters.RepetitionPenalty != 1f;
        _frequencyOrPresenceOn = parameters.FrequencyPenalty != 0f || parameters.PresencePenalty != 0f;
        if (_repetitionOn)
        {
            foreach (int token in promptTokenIds) _repeated.Add(token);
            _promptDistinct = [.. _repeated];
            foreach (int token in _promptDistinct) _maxReferencedToken = Math.Max(_maxReferencedToken, token);
        }
        else
        {
            _promptDistinct = [];
        }
    }

    /// <summary>The settings this sampler applies.</summary>
    public SamplingParams Parameters => _params;

    /// <summary>The PRNG seed in use: <see cref="SamplingParams.Seed"/>, or the random one drawn for this sequence
    /// (log it to reproduce an unseeded generation).</summary>
    public long Seed { get; }

    /// <summary>Tokens sampled so far, in order.</summary>
    public IReadOnlyList<int> OutputTokenIds => _output;

    /// <summary>
    /// Chooses the next token from <paramref name="logits"/> (the model's row for this sequence, one entry per
    /// vocabulary id; -Infinity marks a token that must not be chosen) and records it in the history.
    /// </summary>
    /// <exception cref="ArgumentException">The row is empty, contains NaN or +Infinity, is entirely -Infinity, or is
    /// shorter than a token id the settings or history refer to. The history is then unchanged.</exception>
    public SampledToken Sample(ReadOnlySpan<float> logits)
    {
        float rawMax = LogitMath.MaxChecked(logits, "model logits");
        var ws = t_workspace ??= new Workspace();
        Span<float> x = ProcessLogits(logits, ws, out bool modified);
        float max = modified ? LogitMath.MaxChecked(x, "processed logits") : rawMax;

        int token;
        double rawZ = double.NaN; // sum of exp(raw - rawMax), when the sampling pass computed it anyway
        if (_params.IsGreedy)
        {
            token = LogitMath.ArgMax(x, max);
        }
        else
        {
            var candidates = BuildCandidates(x, max, ws);
            token = Draw(candidates, ws, _rng.NextDouble());
            if (!modified) rawZ = candidates.UnfilteredMass;
        }

        if (double.IsNaN(rawZ)) rawZ = LogitMath.SumExp(logits, rawMax, 1f);
        double logZ = rawMax + Math.Log(rawZ);
        float logprob = (float)(logits[token] - logZ);
        IReadOnlyList<TokenLogprob> top = _params.Logprobs && _params.TopLogprobs > 0
            ? TopRawLogprobs(logits, _params.TopLogprobs, logZ)
            : [];

        Record(token);
        return new SampledToken(token, logprob, top);
    }

    /// <summary>Logits after bias and penalties (before temperature), for tests. Does not change the history.</summary>
    internal float[] ProcessedLogits(ReadOnlySpan<float> logits)
    {
        LogitMath.MaxChecked(logits, "model logits");
        return ProcessLogits(logits, t_workspace ??= new Workspace(), out _).ToArray();
    }

    /// <summary>
    /// The distribution <see cref="Sample"/> would draw from next: the kept tokens with their renormalised
    /// probabilities, highest first (ties: lower id first) when top-k or top-p is on, otherwise by id. Greedy gives
    /// the argmax with probability 1. Draws nothing and does not change the history. For tests.
    /// </summary>
    internal IReadOnlyList<(int TokenId, double Probability)> CandidateDistribution(ReadOnlySpan<float> logits)
    {
        LogitMath.MaxChecked(logits, "model logits");
        var ws = t_workspace ??= new Workspace();
        Span<float> x = ProcessLogits(logits, ws, out _);
        float max = LogitMath.MaxChecked(x, "processed logits");
        if (_params.IsGreedy) return [(LogitMath.ArgMax(x, max), 1.0)];

        var c = BuildCandidates(x, max, ws);
        var result = new List<(int TokenId, double Probability)>();
        if (c.FullVocab)
        {
            for (int i = 0; i < x.Length; i++)
            {
                if (ws.Weights[i] > 0f) result.Add((i, ws.Weights[i] / c.Total));
            }
            return result;
        }

        var ids = ws.Ids.AsSpan(0, c.Count).ToArray();
        Selection.Sort(ids, new LogitOrder(ws.Logits));
        foreach (int id in ids) result.Add((id, ws.Weights[id] / c.Total));
        return result;
    }

    private Span<float> ProcessLogits(ReadOnlySpan<float> logits, Workspace ws, out bool modified)
    {
        int vocab = logits.Length;
        if (vocab <= _maxReferencedToken)
        {
            throw new ArgumentException(
                $"The logits row has {vocab} entries, but token id {_maxReferencedToken} is referenced by the logit bias, prompt or output.",
                nameof(logits));
        }

        ws.Ensure(vocab);
        Span<float> x = ws.Logits.AsSpan(0, vocab);
        logits.CopyTo(x);
        modified = false;

        foreach (var (token, bias) in _bias)
        {
            x[token] += bias;
            modified = true;
        }

        if (_repetitionOn)
        {
            float penalty = _params.RepetitionPenalty;
            foreach (int token in _promptDistinct) x[token] = Penalize(x[token], penalty);
            foreach (int token in _outputOnlyDistinct) x[token] = Penalize(x[token], penalty);
            modified |= _promptDistinct.Length + _outputOnlyDistinct.Count > 0;
        }

        if (_frequencyOrPresenceOn)
        {
            float frequency = _params.FrequencyPenalty, presence = _params.PresencePenalty;
            foreach (var (token, count) in _outputCounts) x[token] -= count * frequency + presence;
            modified |= _outputCounts.Count > 0;
        }
        return x;

        static float Penalize(float logit, float penalty) => logit > 0f ? logit / penalty : logit * penalty;
    }

    /// <summary>
    /// Applies temperature, top-k, top-p and min-p to the processed row <paramref name="x"/> (maximum
    /// <paramref name="max"/>), leaving the kept tokens' weights exp((x - max) / T) in the workspace's per-token
    /// weights (the top token's is 1): every token when <see cref="Candidates.FullVocab"/>, else the tokens
    /// ids[..Count] (in no particular order, but a deterministic one).
    /// </summary>
    /// <remarks>
    /// Nothing here sorts the vocabulary. Top-k estimates its cut from a strided sample of the row, collects every
    /// token above it (a set closed upwards under the order, so it holds the top k) and partially selects k of them.
    /// Top-p collects tokens in bands of falling weight until the collected mass reaches p, then a weighted
    /// quickselect finds the smallest highest-first prefix of them reaching p. Min-p is a plain weight threshold.
    /// </remarks>
    private Candidates BuildCandidates(Span<float> x, float max, Workspace ws)
    {
        float invT = 1f / _params.Temperature;
        float minP = _params.MinP;
        int topK = _params.TopK ?? 0;
        float topP = _params.TopP;
        bool topKOn = topK > 0 && topK < x.Length;
        float[] w = ws.Weights;

        if (!topKOn && topP >= 1f)
        {
            // No truncation by rank or mass: weight every token (min-p zeroes the small weights).
            int blocks = (x.Length + LogitMath.BlockSize - 1) / LogitMath.BlockSize;
            double all = LogitMath.ExpWeights(x, max, invT, minP, w.AsSpan(0, x.Length), ws.BlockSums.AsSpan(0, blocks));
            return new Candidates(true, x.Length, all, invT == 1f && minP == 0f ? all : double.NaN);
        }

        var order = new LogitOrder(ws.Logits);
        int count;
        double mass;               // the mass top-p is relative to
        double unfiltered = double.NaN;
        if (topKOn)
        {
            int pool = TopKPool(x, topK, ws);
            count = Math.Min(topK, pool);
            if (count < pool) Selection.NthElement(ws.Ids.AsSpan(0, pool), count - 1, order);
            mass = 0;
            for (int j = 0; j < count; j++)
            {
                int id = ws.Ids[j];
                w[id] = LogitMath.Exp((x[id] - max) * invT);
                mass += w[id];
            }
        }
        else
        {
            mass = LogitMath.ExpWeights(x, max, invT, 0f, w.AsSpan(0, x.Length), []);
            if (invT == 1f) unfiltered = mass;
            count = TopPPool(w.AsSpan(0, x.Length), topP * mass, ws.Ids);
        }

        if (topP < 1f)
        {
            double target = topP * mass * (1 - TopPRelativeTolerance);
            count = Math.Max(1, Selection.WeightedPrefix(ws.Ids.AsSpan(0, count), w, target, order));
        }

        if (minP > 0f)
        {
            // The top token (weight 1) always stays.
            int kept = 0;
            for (int j = 0; j < count; j++)
            {
                int id = ws.Ids[j];
                if (w[id] >= minP) ws.Ids[kept++] = id;
            }
            count = kept;
        }

        double keptMass = 0;
        for (int j = 0; j < count; j++) keptMass += w[ws.Ids[j]];
        return new Candidates(false, count, keptMass, unfiltered);
    }

    /// <summary>Collects into ids a set of tokens closed upwards under the order with at least k members (or every
    /// unmasked one when there are fewer), using a cut estimated from a strided sample of the row.</summary>
    private static int TopKPool(ReadOnlySpan<float> x, int k, Workspace ws)
    {
        const int SampleSize = 2048;
        float cut = float.MinValue;
        if (x.Length > 4 * SampleSize)
        {
            int stride = x.Length / SampleSize, n = 0;
            Span<float> sample = stackalloc float[SampleSize];
            for (int i = 0; i < SampleSize; i++)
            {
                float v = x[i * stride];
                if (!float.IsNegativeInfinity(v)) sample[n++] = v;
            }
            // 1.5 times the expected number of sample points at or above the k-th largest, plus slack.
            long rank = (long)Math.Ceiling(1.5 * k * n / x.Length) + 16;
            if (rank < n)
            {
                sample = sample[..n];
                sample.Sort();
                cut = sample[n - (int)rank];
            }
        }
        int pool = LogitMath.CollectAtLeast(x, cut, ws.Ids);
        if (pool < k && cut != float.MinValue) pool = LogitMath.CollectAtLeast(x, float.MinValue, ws.Ids);
        return pool;
    }

    /// <summary>Weight floors of the bands <see cref="TopPPool"/> collects, exp(-2) down to "any positive".</summary>
    private static readonly float[] s_bandFloors =
        [.. new[] { 2f, 4f, 6f, 9f, 12f, 16f, 22f, 30f, 40f }.Select(d => LogitMath.Exp(-d)), float.Epsilon];

    /// <summary>Collects into ids the tokens with positive weight, band by band of falling weight, until their
    /// mass reaches <paramref name="enough"/>; the set is closed upwards under the order.</summary>
    private static int TopPPool(ReadOnlySpan<float> weights, double enough, int[] ids)
    {
        int count = 0;
        double poolMass = 0;
        float ceiling = float.PositiveInfinity;
        foreach (float floor in s_bandFloors)
        {
            count += LogitMath.CollectBand(weights, floor, ceiling, ids.AsSpan(count), ref poolMass);
            if (poolMass >= enough) break;
            ceiling = floor;
        }
        return count;
    }

    private static int Draw(Candidates c, Workspace ws, double uniform)
    {
        double target = uniform * c.Total;
        float[] w = ws.Weights;
        if (!c.FullVocab)
        {
            double cumulative = 0;
            int last = ws.Ids[0];
            for (int j = 0; j < c.Count; j++)
            {
                int id = ws.Ids[j];
                if (w[id] <= 0f) continue;
                last = id;
                cumulative += w[id];
                if (cumulative > target) return id;
            }
            return last; // target within rounding of the total
        }

        double before = 0;
        int blocks = (c.Count + LogitMath.BlockSize - 1) / LogitMath.BlockSize;
        for (int b = 0; b < blocks; b++)
        {
            double blockSum = ws.BlockSums[b];
            if (blockSum > 0 && before + blockSum > target)
            {
                int start = b * LogitMath.BlockSize, end = Math.Min(start + LogitMath.BlockSize, c.Count);
                double cumulative = before;
                int lastPositive = start;
                for (int i = start; i < end; i++)
                {
                    if (w[i] <= 0f) continue;
                    lastPositive = i;
                    cumulative += w[i];
                    if (cumulative > target) return i;
                }
                return lastPositive; // the in-block rescan fell short of the block sum by rounding
            }
            before += blockSum;
        }
        for (int i = c.Count - 1; i > 0; i--)
        {
            if (w[i] > 0f) return i;
        }
        return 0;
    }

    /// <summary>The n highest raw logits (ties: lower id first) as log-probabilities, skipping masked tokens.</summary>
    private static TokenLogprob[] TopRawLogprobs(ReadOnlySpan<float> logits, int n, double logZ)
    {
        Span<int> ids = stackalloc int[n];
        Span<float> values = stackalloc float[n];
        int count = 0;
        float bar = float.NegativeInfinity; // an entry must exceed this to enter
        int i = 0;
        ref float r = ref MemoryMarshal.GetReference(logits);
        for (; i <= logits.Length - Vector256<float>.Count; i += Vector256<float>.Count)
        {
            uint mask = Vector256.GreaterThan(Vector256.LoadUnsafe(ref r, (nuint)i), Vector256.Create(bar)).ExtractMostSignificantBits();
            while (mask != 0)
            {
                int id = i + System.Numerics.BitOperations.TrailingZeroCount(mask);
                Offer(id, logits[id], ids, values, ref count, ref bar);
                mask &= mask - 1;
            }
        }
        for (; i < logits.Length; i++) Offer(i, logits[i], ids, values, ref count, ref bar);

        var result = new TokenLogprob[count];
        for (int j = 0; j < count; j++) result[j] = new TokenLogprob(ids[j], (float)(values[j] - logZ));
        return result;
    }

    /// <summary>Insertion into a sorted top list; ids arrive in increasing order, so an equal value stays behind.</summary>
    private static void Offer(int id, float v, Span<int> ids, Span<float> values, ref int count, ref float bar)
    {
        int n = ids.Length;
        if (!(v > bar)) return;
        int p = count < n ? count++ : n - 1;
        while (p > 0 && v > values[p - 1])
        {
            ids[p] = ids[p - 1];
            values[p] = values[p - 1];
            p--;
        }
        ids[p] = id;
        values[p] = v;
        if (count == n) bar = values[n - 1];
    }

    private void Record(int token)
    {
        _output.Add(token);
        if (_frequencyOrPresenceOn) CollectionsMarshal.GetValueRefOrAddDefault(_outputCounts, token, out _)++;
        if (_repetitionOn && _repeated.Add(token)) _outputOnlyDistinct.Add(token);
        if (token > _maxReferencedToken) _maxReferencedToken = token;
    }

    /// <param name="FullVocab">Every token of the row is a candidate (else only the workspace's ids[..Count]).</param>
    /// <param name="Count">Row length, or number of candidate ids.</param>
    /// <param name="Total">Sum of the kept weights.</param>
    /// <param name="UnfilteredMass">Sum of exp(x - max) over the whole row at temperature 1 when it was computed on
    /// the way (NaN otherwise); equals the raw softmax denominator when the logits were not modified.</param>
    private readonly record struct Candidates(bool FullVocab, int Count, double Total, double UnfilteredMass);

    /// <summary>Vocabulary-sized scratch space, one per thread, used only within one call.</summary>
    private sealed class Workspace
    {
        public float[] Logits = [];
        public int[] Ids = [];
        public float[] Weights = [];
        public double[] BlockSums = [];

        public void Ensure(int vocab)
        {
            if (Logits.Length >= vocab) return;
            Logits = new float[vocab];
            Ids = new int[vocab];
            Weights = new float[vocab];
            BlockSums = new double[(vocab + LogitMath.BlockSize - 1) / LogitMath.BlockSize];
        }
    }
}
