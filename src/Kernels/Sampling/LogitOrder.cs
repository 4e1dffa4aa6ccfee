using System.Numerics;
using System.Runtime.CompilerServices;

namespace MoeServer.Kernels.Sampling;

/// <summary>
/// Orders token ids by logit, highest first, ties broken by lower id first. The tie-break makes every selection
/// deterministic and makes top-k = 1 agree with greedy argmax (which takes the first maximum).
/// </summary>
internal readonly struct LogitOrder(float[] logits) : IComparer<int>
{
    private readonly float[] _logits = logits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Compare(int a, int b)
    {
        float x = _logits[a], y = _logits[b];
        if (x > y) return -1;
        if (x < y) return 1;
        return a.CompareTo(b);
    }
}

/// <summary>Partial selection on spans of token ids (introselect: quickselect with a sort fallback).</summary>
internal static class Selection
{
    private const int SmallRange = 24;

    /// <summary>
    /// Rearranges <paramref name="items"/> so that its first <paramref name="count"/> entries are the
    /// <paramref name="count"/> first under <paramref name="order"/>, sorted; the rest follow in no particular order.
    /// O(n + count log count) expected, O(n log n) worst case.
    /// </summary>
    public static void SelectSortedPrefix<TOrder>(Span<int> items, int count, TOrder order)
        where TOrder : IComparer<int>
    {
        if (count <= 0) return;
        if (count < items.Length) NthElement(items, count - 1, order);
        else count = items.Length;
        items[..count].Sort(order);
    }

    /// <summary>
    /// Puts at <paramref name="nth"/> the element that a full sort would put there, with every element before it
    /// not after it under <paramref name="order"/>, and every element after it not before it.
    /// </summary>
    public static void NthElement<TOrder>(Span<int> items, int nth, TOrder order)
        where TOrder : IComparer<int>
    {
        int lo = 0, hi = items.Length - 1;
        // Quickselect degenerating past ~2 log2 n rounds falls back to sorting the remaining range.
        int budget = 2 * BitOperations.Log2((uint)items.Length + 1) + 4;
        while (hi > lo)
        {
            if (hi - lo < SmallRange || --budget < 0)
            {
                items[lo..(hi + 1)].Sort(order);
                return;
            }

            // Median of three to the middle; keys are all distinct (ties broken by id), so Hoare partition is safe.
            int mid = lo + ((hi - lo) >> 1);
            if (order.Compare(items[mid], items[lo]) < 0) Swap(items, mid, lo);
            if (order.Compare(items[hi], items[lo]) < 0) Swap(items, hi, lo);
            if (order.Compare(items[hi], items[mid]) < 0) Swap(items, hi, mid);
            int pivot = items[mid];

            int i = lo, j = hi;
            while (i <= j)
            {
                while (order.Compare(items[i], pivot) < 0) i++;
                while (order.Compare(items[j], pivot) > 0) j--;
                if (i <= j)
                {
                    Swap(items, i, j);
                    i++;
                    j--;
                }
            }

            if (nth <= j) hi = j;
            else if (nth >= i) lo = i;
            else return;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Swap(Span<int> items, int a, int b) => (items[a], items[b]) = (items[b], items[a]);
}
