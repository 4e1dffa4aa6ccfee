namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// An HF "added token": matched verbatim in the input before the BPE model runs. Special ones
/// (<see cref="Special"/> = true, e.g. "&lt;s&gt;", "&lt;|im_end|&gt;") can be skipped when decoding.
/// </summary>
/// <param name="Id">Token id.</param>
/// <param name="Content">The literal text of the token.</param>
/// <param name="Special">Whether it is a special (control) token.</param>
/// <param name="LStrip">Whether the match swallows whitespace on its left.</param>
/// <param name="RStrip">Whether the match swallows whitespace on its right.</param>
/// <param name="Normalized">HF "normalized" flag (kept for round-tripping; matching is always on the raw text).</param>
/// <param name="SingleWord">HF "single_word" flag (kept for round-tripping).</param>
public sealed record AddedToken(
    int Id,
    string Content,
    bool Special = true,
    bool LStrip = false,
    bool RStrip = false,
    bool Normalized = false,
    bool SingleWord = false);
