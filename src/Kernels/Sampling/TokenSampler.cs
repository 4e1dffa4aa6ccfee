using System.Runtime.InteropServices;

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
/// (vLLM's default <c>raw_logprobs</c>; what OpenAI reports as the model's probability).</para>
/// <para>Randomness comes from a xoshiro256** stream seeded with <see cref="Seed"/> and takes one draw per
/// non-greedy token, so a seeded sequence repeats exactly given the same logits.</para>
/// <para>Cost per call is a few vectorised passes over the row; top-k and top-p use partial selection (top-p grows
/// its sorted prefix only as far as the nucleus needs) instead of sorting the vocabulary. Scratch buffers are
/// per thread, not per sequence, so many live samplers do not each hold vocabulary-sized arrays.</para>
/// </remarks>
public sealed class TokenSampler
{
    private const int InitialNucleusChunk = 64;

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
    /// shorter than a token id the settings or history refer to.</exception>
    public SampledToken Sample(ReadOnlySpan<float> logits)
    {
        float rawMax = LogitMath.MaxChecked(logits, "model logits");
        var ws = t_workspace ??= new Workspace();
        Span<float> x = ProcessLogits(logits, ws);

        int token;
        if (_params.IsGreedy)
        {
            token = LogitMath.ArgMax(x, LogitMath.MaxChecked(x, "processed logits"));
        }
        else
        {
            var candidates = BuildCandidates(x, ws);
            token = Draw(candidates, ws, _rng.NextDouble());
        }

        double logZ = rawMax + Math.Log(LogitMath.SumExp(logits, rawMax, 1f));
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
        return ProcessLogits(logits, t_workspace ??= new Workspace()).ToArray();
    }

    /// <summary>
    /// The distribution <see cref="Sample"/> would draw from next: the kept tokens with their renormalised
    /// probabilities, highest first when top-k or top-p sorted them, otherwise by id. Greedy gives the argmax
    /// with probability 1. Draws nothing and does not change the history.
    /// </summary>
    internal IReadOnlyList<(int TokenId, double Probability)> CandidateDistribution(ReadOnlySpan<float> logits)
    {
        LogitMath.MaxChecked(logits, "model logits");
        var ws = t_workspace ??= new Workspace();
        Span<float> x = ProcessLogits(logits, ws);
        if (_params.IsGreedy) return [(LogitMath.ArgMax(x, LogitMath.MaxChecked(x, "processed logits")), 1.0)];

        var c = BuildCandidates(x, ws);
        var result = new List<(int, double)>();
        if (c.FullVocab)
        {
            for (int i = 0; i < x.Length; i++)
            {
                if (ws.Weights[i] > 0f) result.Add((i, ws.Weights[i] / c.Total));
            }
        }
        else
        {
            for (int j = 0; j < c.Count; j++) result.Add((ws.Ids[j], ws.Weights[j] / c.Total));
        }
        return result;
    }

    private Span<float> ProcessLogits(ReadOnlySpan<float> logits, Workspace ws)
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

        foreach (var (token, bias) in _bias) x[token] += bias;

        if (_repetitionOn)
        {
            float penalty = _params.RepetitionPenalty;
            foreach (int token in _promptDistinct) x[token] = Penalize(x[token], penalty);
            foreach (int token in _outputOnlyDistinct) x[token] = Penalize(x[token], penalty);
        }

        if (_frequencyOrPresenceOn)
        {
            float frequency = _params.FrequencyPenalty, presence = _params.PresencePenalty;
            foreach (var (token, count) in _outputCounts) x[token] -= count * frequency + presence;
        }
        return x;

        static float Penalize(float logit, float penalty) => logit > 0f ? logit / penalty : logit * penalty;
    }

    /// <summary>Applies temperature, top-k, top-p and min-p. Leaves the kept weights (unnormalised, the top one 1)
    /// in the workspace: per token when <see cref="Candidates.FullVocab"/>, else per sorted position with ids.</summary>
    private Candidates BuildCandidates(Span<float> x, Workspace ws)
    {
        float max = LogitMath.MaxChecked(x, "processed logits");
        float invT = 1f / _params.Temperature;
        float minP = _params.MinP;
        int topK = _params.TopK ?? 0;
        float topP = _params.TopP;

        if (!(topK > 0 && topK < x.Length) && topP >= 1f)
            return WeighAll(x, ws, max, invT, minP);

        int finite = 0;
        for (int i = 0; i < x.Length; i++)
        {
            if (!float.IsNegativeInfinity(x[i])) ws.Ids[finite++] = i;
        }
        if (!(topK > 0 && topK < finite) && topP >= 1f)
            return WeighAll(x, ws, max, invT, minP); // top-k not below the number of unmasked tokens
        float[] weights = ws.Weights;

        int sorted = 0;       // ids[..sorted] are in final order with weights filled in
        int limit = finite;   // how many may ever be kept
        double mass;          // mass that top-p is relative to
        if (topK > 0 && topK < finite)
        {
            limit = topK;
            sorted = Extend(0, topK);
            mass = 0;
            for (int j = 0; j < sorted; j++) mass += weights[j];
        }
        else
        {
            mass = LogitMath.SumExp(x, max, invT);
        }

        int kept = sorted;
        if (topP < 1f)
        {
            double target = topP * mass * (1 - TopPRelativeTolerance);
            double cumulative = 0;
            kept = 0;
            while (kept < limit)
            {
                if (kept == sorted)
                    sorted = Extend(sorted, Math.Min(sorted == 0 ? InitialNucleusChunk : 3 * sorted, limit - sorted));
                cumulative += weights[kept++];
                if (cumulative >= target) break;
            }
        }

        if (minP > 0f)
        {
            int cut = 1;
            while (cut < kept && weights[cut] >= minP) cut++;
            kept = cut;
        }

        double keptMass = 0;
        for (int j = 0; j < kept; j++) keptMass += weights[j];
        return new Candidates(false, kept, keptMass);

        // Sorts the next `count` ids after ids[..from] into place and fills in their weights.
        int Extend(int from, int count) => ExtendSorted(ws, finite, from, count, max, invT);
    }

    /// <summary>No truncation by rank or mass: weight every token (min-p is a plain threshold on the weight).</summary>
    private static Candidates WeighAll(Span<float> x, Workspace ws, float max, float invT, float minP)
    {
        int blocks = (x.Length + LogitMath.BlockSize - 1) / LogitMath.BlockSize;
        double total = LogitMath.ExpWeights(
            x, max, invT, minP, ws.Weights.AsSpan(0, x.Length), ws.BlockSums.AsSpan(0, blocks));
        return new Candidates(true, x.Length, total);
    }

    private static int ExtendSorted(Workspace ws, int finite, int from, int count, float max, float invT)
    {
        Span<int> rest = ws.Ids.AsSpan(from, finite - from);
        Selection.SelectSortedPrefix(rest, count, new LogitOrder(ws.Logits));
        for (int j = from; j < from + count; j++) ws.Weights[j] = MathF.Exp((ws.Logits[ws.Ids[j]] - max) * invT);
        return from + count;
    }

    private static int Draw(Candidates c, Workspace ws, double uniform)
    {
        double target = uniform * c.Total;
        float[] w = ws.Weights;
        if (!c.FullVocab)
        {
            double cumulative = 0;
            int lastPositive = 0;
            for (int j = 0; j < c.Count; j++)
            {
                if (w[j] <= 0f) continue;
                lastPositive = j;
                cumulative += w[j];
                if (cumulative > target) return ws.Ids[j];
            }
            return ws.Ids[lastPositive]; // target within rounding of the total
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

    private static TokenLogprob[] TopRawLogprobs(ReadOnlySpan<float> logits, int n, double logZ)
    {
        Span<int> ids = stackalloc int[n];
        Span<float> values = stackalloc float[n];
        int count = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            float v = logits[i];
            if (float.IsNegativeInfinity(v)) continue;
            if (count == n && !(v > values[n - 1])) continue; // a later equal value has a higher id: not better
            int p = count < n ? count++ : n - 1;
            while (p > 0 && v > values[p - 1])
            {
                ids[p] = ids[p - 1];
                values[p] = values[p - 1];
                p--;
            }
            ids[p] = i;
            values[p] = v;
        }

        var result = new TokenLogprob[count];
        for (int j = 0; j < count; j++) result[j] = new TokenLogprob(ids[j], (float)(values[j] - logZ));
        return result;
    }

    private void Record(int token)
    {
        _output.Add(token);
        if (_frequencyOrPresenceOn) CollectionsMarshal.GetValueRefOrAddDefault(_outputCounts, token, out _)++;
        if (_repetitionOn && _repeated.Add(token)) _outputOnlyDistinct.Add(token);
        if (token > _maxReferencedToken) _maxReferencedToken = token;
    }

    private readonly record struct Candidates(bool FullVocab, int Count, double Total);

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
