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

/// <summary>
/// Selection and sorting of token-id spans under an order whose keys are all distinct (ties are broken by id), with
/// the comparer as a generic struct so that comparisons inline. All of it is deterministic.
/// </summary>
internal static class Selection
{
    private const int SmallRange = 24;

    /// <summary>
    /// Rearranges <paramref name="items"/> so that its first <paramref name="count"/> entries are the
    /// <paramref name="count"/> first under <paramref name="order"/>, sorted; the rest follow in no particular order.
    /// </summary>
    public static void SelectSortedPrefix<TOrder>(Span<int> items, int count, TOrder order)
        where TOrder : IComparer<int>
    {
        if (count <= 0) return;
        if (count < items.Length) NthElement(items, count - 1, order);
        else count = items.Length;
        Sort(items[..count], order);
    }

    /// <summary>
    /// Puts at <paramref name="nth"/> the element that a full sort would put there, with the elements before it
    /// first under <paramref name="order"/> (in no particular order). Expected O(n), worst case O(n log n).
    /// </summary>
    public static void NthElement<TOrder>(Span<int> items, int nth, TOrder order)
        where TOrder : IComparer<int>
    {
        int lo = 0, hi = items.Length; // [lo, hi)
        int budget = 2 * BitOperations.Log2((uint)items.Length + 1) + 4;
        while (hi - lo > 1)
        {
            if (hi - lo <= SmallRange || --budget < 0)
            {
                Sort(items[lo..hi], order);
                return;
            }
            int p = Partition(items, lo, hi, order);
            if (nth < p) hi = p;
            else if (nth > p) lo = p + 1;
            else return;
        }
    }

    /// <summary>
    /// Finds the smallest n such that the first n items under <paramref name="order"/> have a total weight of at
    /// least <paramref name="target"/> (all of them when the total falls short) and moves those n items, in no
    /// particular order, to the front. <paramref name="weights"/> is indexed by item (token id). Expected O(n).
    /// </summary>
    public static int WeightedPrefix<TOrder>(Span<int> items, float[] weights, double target, TOrder order)
        where TOrder : IComparer<int>
    {
        int lo = 0, hi = items.Length; // items[..lo] are all kept; the answer lies in [lo, hi]
        double before = 0;             // weight of items[..lo]
        int budget = 2 * BitOperations.Log2((uint)items.Length + 1) + 4;
        while (hi > lo)
        {
            if (hi - lo <= SmallRange || --budget < 0)
            {
                Sort(items[lo..hi], order);
                for (int i = lo; i < hi; i++)
                {
                    before += weights[items[i]];
                    if (before >= target) return i + 1;
                }
                return hi;
            }

            int p = Partition(items, lo, hi, order);
            double left = 0;
            for (int i = lo; i < p; i++) left += weights[items[i]];
            if (before + left >= target)
            {
                hi = p;
            }
            else
            {
                before += left + weights[items[p]];
                if (before >= target) return p + 1;
                lo = p + 1;
            }
        }
        return lo;
    }

    /// <summary>Sorts under <paramref name="order"/>: quicksort, insertion sort on small ranges, heapsort when the
    /// recursion gets too deep. O(n log n) worst case, no allocation.</summary>
    public static void Sort<TOrder>(Span<int> items, TOrder order)
        where TOrder : IComparer<int>
    {
        IntroSort(items, 2 * BitOperations.Log2((uint)items.Length + 1), order);
    }

    private static void IntroSort<TOrder>(Span<int> items, int depth, TOrder order)
        where TOrder : IComparer<int>
    {
        while (items.Length > SmallRange)
        {
            if (depth-- == 0)
            {
                HeapSort(items, order);
                return;
            }
            int p = Partition(items, 0, items.Length, order);
            // Recurse into the smaller side, loop on the larger.
            if (p < items.Length - p - 1)
            {
                IntroSort(items[..p], depth, order);
                items = items[(p + 1)..];
            }
            else
            {
                IntroSort(items[(p + 1)..], depth, order);
                items = items[..p];
            }
        }
        InsertionSort(items, order);
    }

    /// <summary>Median-of-three pivot, Lomuto partition of [lo, hi); returns the pivot's final index.</summary>
    private static int Partition<TOrder>(Span<int> items, int lo, int hi, TOrder order)
        where TOrder : IComparer<int>
    {
        int last = hi - 1, mid = lo + ((hi - lo) >> 1);
        if (order.Compare(items[mid], items[lo]) < 0) Swap(items, mid, lo);
        if (order.Compare(items[last], items[lo]) < 0) Swap(items, last, lo);
        if (order.Compare(items[mid], items[last]) < 0) Swap(items, mid, last); // median now at `last`
        int pivot = items[last];
        int store = lo;
        for (int i = lo; i < last; i++)
        {
            if (order.Compare(items[i], pivot) < 0) Swap(items, i, store++);
        }
        Swap(items, store, last);
        return store;
    }

    private static void InsertionSort<TOrder>(Span<int> items, TOrder order)
        where TOrder : IComparer<int>
    {
        for (int i = 1; i < items.Length; i++)
        {
            int item = items[i];
            int j = i - 1;
            while (j >= 0 && order.Compare(item, items[j]) < 0)
            {
                items[j + 1] = items[j];
                j--;
            }
            items[j + 1] = item;
        }
    }

    private static void HeapSort<TOrder>(Span<int> items, TOrder order)
        where TOrder : IComparer<int>
    {
        for (int i = items.Length / 2 - 1; i >= 0; i--) SiftDown(items, i, items.Length, order);
        for (int end = items.Length - 1; end > 0; end--)
        {
            Swap(items, 0, end);
            SiftDown(items, 0, end, order);
        }
    }

    private static void SiftDown<TOrder>(Span<int> items, int i, int n, TOrder order)
        where TOrder : IComparer<int>
    {
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= n) return;
            if (child + 1 < n && order.Compare(items[child], items[child + 1]) < 0) child++;
            if (order.Compare(items[i], items[child]) >= 0) return;
            Swap(items, i, child);
            i = child;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Swap(Span<int> items, int a, int b) => (items[a], items[b]) = (items[b], items[a]);
}
