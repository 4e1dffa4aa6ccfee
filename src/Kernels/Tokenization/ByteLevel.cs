using System.Text;
using System.Text.RegularExpressions;

namespace MoeServer.Kernels.Tokenization;

/// <summary>
/// GPT-2 byte-level helpers: the <c>bytes_to_unicode</c> table (every byte maps to a printable
/// character, e.g. space to 'Ġ') and the GPT-2 pre-tokenization regex.
/// </summary>
public static partial class ByteLevel
{
    /// <summary>The GPT-2 pre-tokenization pattern (HF ByteLevel pre-tokenizer with use_regex = true).</summary>
    public const string Gpt2Pattern =
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] ByteToCharTable = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByteTable = BuildCharToByte(ByteToCharTable);

    /// <summary>The compiled GPT-2 pre-tokenization regex.</summary>
    public static Regex Gpt2Regex => Gpt2RegexGenerated();

    [GeneratedRegex(Gpt2Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Gpt2RegexGenerated();

    /// <summary>The printable character that stands for byte <paramref name="b"/>.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>The byte a byte-level character stands for, if it is one of the 256 table characters.</summary>
    public static bool TryCharToByte(char c, out byte b) => CharToByteTable.TryGetValue(c, out b);

    /// <summary>
    /// The 256 byte symbols in GPT-2 vocabulary order (sorted by character, which puts the printable
    /// bytes '!'..'~' first, as GPT-2's vocab.json does).
    /// </summary>
    public static IReadOnlyList<string> BaseAlphabet { get; } =
        ByteToCharTable.OrderBy(c => c).Select(c => c.ToString()).ToArray();

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to their byte-level characters.</summary>
    public static string Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, bs) =>
        {
            for (int i = 0; i < bs.Length; i++)
            {
                span[i] = ByteToCharTable[bs[i]];
            }
        });
    }

    /// <summary>
    /// Appends the bytes a token stands for, as the HF ByteLevel decoder does: when every character is a
    /// byte-level character, the mapped bytes; otherwise the token's own UTF-8 bytes.
    /// </summary>
    public static void AppendTokenBytes(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (!CharToByteTable.ContainsKey(c))
            {
                output.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
        }

        foreach (char c in token)
        {
            output.Add(CharToByteTable[c]);
        }
    }

    private static char[] BuildByteToChar()
    {
        var bs = new List<int>();
        for (int i = '!'; i <= '~'; i++)
        {
            bs.Add(i);
        }

        for (int i = 0xA1; i <= 0xAC; i++)
        {
            bs.Add(i);
        }

        for (int i = 0xAE; i <= 0xFF; i++)
        {
            bs.Add(i);
        }

        var table = new char[256];
        foreach (int b in bs)
        {
            table[b] = (char)b;
        }

        int n = 0;
        var printable = new HashSet<int>(bs);
        for (int b = 0; b < 256; b++)
        {
            if (!printable.Contains(b))
            {
                table[b] = (char)(256 + n);
                n++;
            }
        }

        return table;
    }

    private static Dictionary<char, byte> BuildCharToByte(char[] table)
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++)
        {
            map[table[b]] = (byte)b;
        }

        return map;
    }
}
