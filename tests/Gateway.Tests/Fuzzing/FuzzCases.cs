using System.Globalization;
using System.Text;
using System.Text.Json;
using CsCheck;

namespace MoeServer.Gateway.Tests.Fuzzing;

/// <summary>Uniform draws from a CsCheck <see cref="PCG"/> stream.</summary>
public static class FuzzRandom
{
    public static double Uniform(PCG pcg) => pcg.Next() / 4294967296.0;

    public static int Int(PCG pcg, int min, int max) => (int)(min + (long)(pcg.Next64() % (ulong)((long)max - min + 1)));

    public static T Pick<T>(PCG pcg, params T[] items) => items[Int(pcg, 0, items.Length - 1)];
}

/// <summary>What the fuzzer needs to know of the served model (to aim at its limits).</summary>
public sealed record ModelFacts(string Name, int VocabSize, int ContextLength, int NumLayers, int NumExperts);

/// <summary>What kind of route a case hits: the answer rules differ (OpenAI-shaped errors on the API only).</summary>
public enum RouteKind
{
    /// <summary>/v1/* and /tokenize, /detokenize: every refusal is an OpenAI-shaped error.</summary>
    Api,
    /// <summary>/health, /ready, /metrics, /ops/*, the chat page, SignalR's negotiate: never a 5xx (except /ready's 503).</summary>
    Node,
    /// <summary>Bytes that are not a well-formed HTTP request: Kestrel's own 400/408/413/431 or a closed connection.</summary>
    Malformed,
}

/// <summary>One fuzzed HTTP request: the bytes, how they are sent, and which rules its answer must follow.</summary>
public sealed record HttpCase(int Index, string Route, RouteKind Kind, byte[] Head, byte[] Body, SendMode Mode, bool Streaming, string Description)
{
    /// <summary>The body as text for reports (cut short).</summary>
    public string Method => Encoding.ASCII.GetString(Head, 0, Math.Max(0, Array.IndexOf(Head, (byte)' ')));

    public string BodyPreview => Body.Length <= 300 ? Encoding.UTF8.GetString(Body) : Encoding.UTF8.GetString(Body, 0, 300) + $"... ({Body.Length} bytes)";
}

/// <summary>
/// Seeded generator of fuzzed HTTP requests. Case <c>i</c> of seed <c>s</c> is always the same request (its own
/// CsCheck <see cref="PCG"/> stream), so a finding is reproduced by its seed and index alone.
/// Mutations: wrong types; huge, negative, NaN and infinite numbers; deep JSON nesting; invalid UTF-8; truncated, slow
/// and aborted bodies; oversize and broken headers; unknown fields; token ids outside the vocabulary; stop lists of 10k
/// entries; n, logprobs and max_tokens at and beyond their limits; streaming and not.
/// </summary>
public sealed class HttpCaseGenerator(ModelFacts model, ulong seed)
{
    private static readonly string[] ApiRoutes = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"];

    public HttpCase Generate(int index) => new Builder(model, new PCG((uint)index, seed), index).Build();

    /// <summary>The JSON argument of a hub call (camelCase fields of Generate or Chat, mutated like the HTTP bodies;
    /// not always valid JSON) and a few words on what was mutated. Seeded like <see cref="Generate"/>.</summary>
    public (string Json, bool Chat, string Description) HubArgument(int index)
    {
        var b = new Builder(model, new PCG((uint)index, seed ^ 0x9E3779B97F4A7C15UL), index);
        return b.HubArgument();
    }

    private sealed class Builder(ModelFacts model, PCG pcg, int index)
    {
        private readonly List<string> _notes = [];

        // Uniform draws from the case's own PCG stream (CsCheck's Gen.Double leans to edge values, which would make
        // every "rare" mutation common).
        private double Uniform() => pcg.Next() / 4294967296.0;
        private int Int(int min, int max) => FuzzRandom.Int(pcg, min, max);
        private bool Chance(double p) => Uniform() < p;
        private T Pick<T>(params T[] items) => items[Int(0, items.Length - 1)];

        public HttpCase Build()
        {
            double r = Uniform();
            if (r < 0.78) return ApiCase();
            if (r < 0.93) return NodeCase();
            return MalformedCase();
        }

        public (string Json, bool Chat, string Description) HubArgument()
        {
            bool chat = Chance(0.5);
            var fields = chat ? ChatFields() : CompletionFields();
            if (!chat)
            {
                // Generate takes prompt (text) or promptTokenIds, and logprobs as a flag.
                if (fields.Remove("logprobs", out var lp)) fields["logprobs"] = Chance(0.8) ? "true" : lp;
                if (fields.TryGetValue("prompt", out var prompt) && prompt.StartsWith('[') && Chance(0.7))
                {
                    fields.Remove("prompt");
                    fields["prompt_token_ids"] = TokenIdsValue();
                }
            }
            if (Chance(0.3)) fields["stream"] = AnyValue();
            int mutations = Int(0, 3);
            for (int i = 0; i < mutations; i++) Mutate(fields);
            if (Chance(0.15)) fields[RandomName()] = AnyValue();
            var camel = new Dictionary<string, string>();
            foreach (var (key, value) in fields) camel[CamelCase(key)] = value;
            return (Serialize(camel), chat, string.Join("; ", _notes));
        }

        private static string CamelCase(string s)
        {
            var parts = s.Split('_');
            return parts[0] + string.Concat(parts.Skip(1).Select(p => p.Length == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..]));
        }

        // ---------- API routes ----------

        private HttpCase ApiCase()
        {
            string route = Pick(ApiRoutes);
            var fields = route switch
            {
                "/v1/completions" => CompletionFields(),
                "/v1/chat/completions" => ChatFields(),
                "/tokenize" => TokenizeFields(),
                _ => DetokenizeFields(),
            };
            bool streaming = false;
            if (route.StartsWith("/v1/", StringComparison.Ordinal) && Chance(0.4))
            {
                fields["stream"] = Chance(0.9) ? "true" : Pick("\"yes\"", "1", "null", "[]");
                streaming = fields["stream"] == "true";
                if (Chance(0.5)) fields["stream_options"] = Pick("{\"include_usage\":true}", "{\"include_usage\":\"x\"}", "{}", "[]", "{\"include_usage\":false,\"junk\":1}");
            }
            else if (Chance(0.05))
            {
                fields["stream_options"] = "{\"include_usage\":true}"; // without stream: refused
            }
            int mutations = Int(0, 3);
            for (int i = 0; i < mutations; i++) Mutate(fields);
            if (Chance(0.15)) fields[RandomName()] = AnyValue(); // an unknown field
            if (route.StartsWith("/v1/", StringComparison.Ordinal)) BoundWork(fields);
            byte[] body = Encoding.UTF8.GetBytes(Serialize(fields));
            if (Chance(0.10)) body = MutateBytes(body);

            string method = Chance(0.04) ? Pick("GET", "PUT", "DELETE", "PATCH") : "POST";
            if (method != "POST") _notes.Add($"method {method}");
            var headers = new List<(string, string)> { ("Content-Type", "application/json") };
            var mode = SendMode.Whole;
            var kind = RouteKind.Api;
            double h = Uniform();
            if (h < 0.04) { headers[0] = ("Content-Type", Pick("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")); _notes.Add("content-type not json"); }
            else if (h < 0.06) { headers.Clear(); _notes.Add("no content-type"); }
            else if (h < 0.08) { headers[0] = ("Content-Type", "application/json; charset=utf-16"); _notes.Add("charset utf-16"); }
            else if (h < 0.10) { headers.Add(("X-Fuzz", new string('a', Int(33_000, 70_000)))); kind = RouteKind.Malformed; _notes.Add("oversize header"); }
            else if (h < 0.11) { for (int i = 0; i < 120; i++) headers.Add(($"X-Many-{i}", new string('b', 300))); kind = RouteKind.Malformed; _notes.Add("many headers"); }
            else if (h < 0.14) { headers.Add(("x-request-id", Pick(new string('r', Int(65, 400)), "../../etc", "a b c", "ünïcödé", "", "\t"))); _notes.Add("odd request id"); }
            else if (h < 0.15) { headers.Add(("Authorization", Pick("Bearer", "Bearer " + new string('k', 5000), "Basic Zm9vOmJhcg=="))); _notes.Add("authorization junk"); }
            else if (h < 0.16) { headers.Add(("Expect", "100-continue")); }

            double m = Uniform();
            if (m < 0.03) { mode = SendMode.Slow; _notes.Add("slow body"); }
            else if (m < 0.07) { mode = SendMode.Truncated; _notes.Add("truncated body"); }
            else if (m < 0.10) { mode = SendMode.Abort; _notes.Add("client aborts"); }

            long declared = body.Length;
            if (mode == SendMode.Truncated)
            {
                declared = body.Length + Int(1, 5000);
                body = body[..Int(0, body.Length)];
            }
            bool chunked = mode == SendMode.Whole && kind == RouteKind.Api && Chance(0.04);
            byte[] head = Head(method, route, headers, chunked ? null : declared);
            if (chunked)
            {
                _notes.Add("chunked body");
                body = Chunk(body, broken: Chance(0.3));
                if (_notes[^1] == "broken chunks")
                {
                    kind = RouteKind.Malformed;
                    // The client then ends its side: a server that waited for the rest of a body that never comes would
                    // be right to (Kestrel's minimum data rate ends it eventually), and that is not what is tested here.
                    mode = SendMode.Truncated;
                }
            }
            return new HttpCase(index, route, kind, head, body, mode, streaming && method == "POST", string.Join("; ", _notes));
        }

        private Dictionary<string, string> CompletionFields()
        {
            var f = Common();
            f["prompt"] = PromptValue();
            if (Chance(0.25)) f["logprobs"] = Chance(0.7) ? Int(0, 21).ToString(CultureInfo.InvariantCulture) : IntValue();
            if (Chance(0.05)) f["echo"] = Pick("true", "false", "1");
            if (Chance(0.05)) f["suffix"] = Pick("\"x\"", "\"\"", "3");
            if (Chance(0.05)) f["best_of"] = IntValue();
            return f;
        }

        private Dictionary<string, string> ChatFields()
        {
            var f = Common();
            f["messages"] = MessagesValue();
            if (Chance(0.25))
            {
                f["logprobs"] = Chance(0.8) ? "true" : Pick("false", "1", "\"true\"");
                if (Chance(0.7)) f["top_logprobs"] = Chance(0.7) ? Int(0, 21).ToString(CultureInfo.InvariantCulture) : IntValue();
            }
            if (Chance(0.1)) f["max_completion_tokens"] = Chance(0.6) ? Int(1, 8).ToString(CultureInfo.InvariantCulture) : IntValue();
            if (Chance(0.05)) f["tools"] = Pick("[]", "[{\"type\":\"function\"}]", "{}", "3");
            if (Chance(0.05)) f["response_format"] = Pick("{\"type\":\"text\"}", "{\"type\":\"json_object\"}", "{\"type\":3}", "{}", "\"text\"");
            return f;
        }

        private Dictionary<string, string> TokenizeFields()
        {
            var f = new Dictionary<string, string>();
            if (Chance(0.6)) f["prompt"] = Chance(0.7) ? StringValue() : AnyValue();
            else f["messages"] = MessagesValue();
            if (Chance(0.2)) f["add_generation_prompt"] = Pick("true", "false", "0", "\"no\"");
            if (Chance(0.1)) f["model"] = ModelValue();
            return f;
        }

        private Dictionary<string, string> DetokenizeFields()
        {
            var f = new Dictionary<string, string> { ["tokens"] = Chance(0.8) ? TokenIdsValue() : AnyValue() };
            if (Chance(0.1)) f["model"] = ModelValue();
            return f;
        }

        /// <summary>The generation fields both completion routes share; each present with some chance.</summary>
        private Dictionary<string, string> Common()
        {
            var f = new Dictionary<string, string>
            {
                // Mostly short generations (the fuzz is about input handling); sometimes at or past the limits.
                ["max_tokens"] = Chance(0.9) ? Int(1, 6).ToString(CultureInfo.InvariantCulture) : MaxTokensValue(),
            };
            if (Chance(0.5)) f["temperature"] = Chance(0.7) ? Pick("0", "0.7", "1", "2") : FloatValue();
            if (Chance(0.2)) f["top_p"] = Chance(0.6) ? Pick("0.9", "1", "0.01") : FloatValue();
            if (Chance(0.15)) f["top_k"] = Chance(0.6) ? Pick("-1", "0", "1", "40", "512", "100000") : IntValue();
            if (Chance(0.1)) f["min_p"] = FloatValue();
            if (Chance(0.3)) f["seed"] = Chance(0.6) ? Int(0, 1000).ToString(CultureInfo.InvariantCulture) : Pick("-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "1.5", "\"7\"");
            if (Chance(0.2)) f["stop"] = StopValue();
            if (Chance(0.1)) f["stop_token_ids"] = TokenIdsValue();
            if (Chance(0.2)) f["n"] = Chance(0.7) ? Pick("1", "2", "4", "16", "17", "0", "-1") : IntValue();
            if (Chance(0.1)) f["presence_penalty"] = FloatValue();
            if (Chance(0.1)) f["frequency_penalty"] = FloatValue();
            if (Chance(0.1)) f["repetition_penalty"] = FloatValue();
            if (Chance(0.1)) f["logit_bias"] = LogitBiasValue();
            if (Chance(0.1)) f["timeout"] = Pick("1e-9", "0.000001", "0.001", "30", "0", "-1", "1e308", "1e30", "\"5\"", "NaN", "Infinity", "9.2e18");
            if (Chance(0.1)) f["top_k_experts"] = Chance(0.5) ? Int(0, model.NumExperts + 1).ToString(CultureInfo.InvariantCulture) : IntValue();
            if (Chance(0.1)) f["disabled_experts"] = DisabledExpertsValue();
            if (Chance(0.05)) f["user"] = AnyValue();
            if (Chance(0.1)) f["model"] = ModelValue();
            return f;
        }

        /// <summary>A request for thousands of tokens is a valid one, and valid work is not what the fuzz is about: long
        /// generations (max_tokens over 64) run one choice of one prompt, so every case answers well inside its deadline
        /// (64 choices of 4,088 tokens would take minutes of both cores, a valid answer too late to tell from a hang).</summary>
        private static void BoundWork(Dictionary<string, string> fields)
        {
            bool Long(string key) => fields.TryGetValue(key, out var v) && double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double t) && t > 64;
            bool unbounded = !fields.ContainsKey("max_tokens") && !fields.ContainsKey("max_completion_tokens"); // the server's default: up to 4,096
            if (!unbounded && !Long("max_tokens") && !Long("max_completion_tokens")) return;
            if (fields.ContainsKey("n")) fields["n"] = "1";
            if (fields.TryGetValue("prompt", out var p) && p.StartsWith('[')) fields["prompt"] = "\"In the beginning\"";
        }

        /// <summary>Replaces one field with something else: a wrong type, a number at an edge, or any JSON.</summary>
        private void Mutate(Dictionary<string, string> fields)
        {
            if (fields.Count == 0 || Chance(0.2))
            {
                fields[Pick("max_tokens", "n", "temperature", "logprobs", "stop", "prompt", "messages", "tokens", "seed", "timeout", "top_logprobs", "stream")] = AnyValue();
                return;
            }
            string key = fields.Keys.ElementAt(Int(0, fields.Count - 1));
            if (Chance(0.15))
            {
                fields.Remove(key);
                _notes.Add($"without {key}");
                return;
            }
            fields[key] = AnyValue();
            _notes.Add($"{key} mutated");
        }

        private string PromptValue()
        {
            double r = Uniform();
            if (r < 0.55) return StringValue();
            if (r < 0.65) return Json(Enumerable.Range(0, Int(1, 5)).Select(_ => Text()).ToArray());
            if (r < 0.80) return TokenIdsValue();
            if (r < 0.88) return "[" + string.Join(",", Enumerable.Range(0, Int(1, 3)).Select(_ => TokenIdsValue())) + "]";
            if (r < 0.92) return Pick("[]", "[[]]", "\"\"", "[\"a\",1]", "[[1],\"a\"]", "[1.5]", "[-1]", "[2147483648]");
            return AnyValue();
        }

        private string MessagesValue()
        {
            double r = Uniform();
            if (r < 0.7)
            {
                int count = Chance(0.05) ? Int(200, 2000) : Int(1, 4);
                var items = new List<string>(count);
                for (int i = 0; i < count; i++)
                {
                    string role = Chance(0.85) ? Pick("user", "assistant", "system", "developer") : Pick("tool", "", "USER", "3");
                    string content = Chance(0.85) ? StringValue(shortOnly: count > 50)
                        : Pick("null", "[{\"type\":\"text\",\"text\":\"hi\"}]", "[{\"type\":\"image_url\"}]", "[{\"type\":\"text\"}]", "[1]", "{}", "7");
                    items.Add(Chance(0.95) ? $"{{\"role\":{Json(role)},\"content\":{content}}}" : Pick("null", "{}", "1", $"{{\"content\":{content}}}", $"{{\"role\":{Json(role)}}}"));
                }
                return "[" + string.Join(",", items) + "]";
            }
            if (r < 0.8) return Pick("[]", "null", "{}", "\"hi\"", "[null]");
            return AnyValue();
        }

        private string StringValue(bool shortOnly = false)
        {
            double r = Uniform();
            if (shortOnly || r < 0.7) return Json(Text());
            if (r < 0.76) return Json(string.Concat(Enumerable.Repeat(Pick("a", "ab", "x", "é", "\u4e2d"), Int(5_000, 60_000)))); // a very long single word
            if (r < 0.80) return Json(string.Join(' ', Enumerable.Repeat("the word", Int(2_000, 9_000)))); // longer than the context
            if (r < 0.86) return Pick("\"\\ud800\"", "\"a\\udc00b\"", "\"\\u0000\"", "\"\\uFFFF\\uFFFE\"", "\"<|im_start|>system\"", "\"</s><s>\"", "\"\\u001b[31m\"");
            if (r < 0.92) return Json(new string(Enumerable.Range(0, Int(1, 40)).Select(_ => (char)Int(0, 0xD7FF)).ToArray()));
            return Json(Text() + "\u00e9\u20ac\U0001F600");
        }

        private string Text() => Pick("Hello", "In the beginning", "hi", " ", "a b c d e", "0 1 2 3", "The quick brown fox", "\n\n", "x");

        private string TokenIdsValue()
        {
            int n = Chance(0.03) ? Int(4_000, 20_000) : Int(0, 12);
            var ids = new int[n];
            for (int i = 0; i < n; i++)
            {
                ids[i] = Chance(0.9) ? Int(0, model.VocabSize - 1)
                    : Pick(-1, model.VocabSize, model.VocabSize + 1, int.MaxValue, int.MinValue, 1 << 20);
            }
            string list = string.Join(",", ids);
            if (Chance(0.05)) list += Pick(",1.5", ",\"3\"", ",null", ",2147483648", ",-2147483649", ",1e3");
            return "[" + list + "]";
        }

        private string StopValue()
        {
            double r = Uniform();
            if (r < 0.4) return Json(Pick("\n", ".", "the", "x", "a b"));
            if (r < 0.6) return Json(Enumerable.Range(0, Int(0, 20)).Select(i => Pick("\n", ".", "and", "zz", "q" + i)).ToArray());
            if (r < 0.72) { _notes.Add("10k stop strings"); return Json(Enumerable.Range(0, 10_000).Select(i => "s" + i).ToArray()); }
            if (r < 0.78) return Json(new string('s', Int(1_000, 100_000)));
            if (r < 0.85) return Pick("[\"\"]", "\"\"", "[1]", "[null]", "3", "{}", "[[\"a\"]]");
            return AnyValue();
        }

        private string LogitBiasValue()
        {
            double r = Uniform();
            if (r < 0.5) return $"{{\"{Int(0, model.VocabSize - 1)}\":{Pick("-100", "100", "5", "0", "101", "-101", "1e39", "\"x\"", "null")}}}";
            if (r < 0.65) return "{" + string.Join(",", Enumerable.Range(0, Int(500, 5000)).Select(i => $"\"{i % (model.VocabSize + 10)}\":1")) + "}";
            if (r < 0.85) return Pick("{\"-1\":1}", "{\"abc\":1}", "{\"1.5\":1}", "{\"\":1}", "{\"99999999999\":1}", "{\" 1\":1}", "{\"+1\":1}", "[]", "3");
            return AnyValue();
        }

        private string DisabledExpertsValue()
        {
            double r = Uniform();
            if (r < 0.5) return Json(Enumerable.Range(0, Int(0, 3)).Select(_ => $"{Int(-1, model.NumLayers)}.{Int(-1, model.NumExperts)}").ToArray());
            if (r < 0.7) return "[" + string.Join(",", Enumerable.Range(0, Int(0, model.NumExperts + 1)).Select(e => e.ToString(CultureInfo.InvariantCulture))) + "]";
            if (r < 0.85) return Pick("[\"1.2.3\"]", "[\"a.b\"]", "[\"99999999999.1\"]", "[1.5]", "[-1]", "[\"\"]", "\"0.1\"", "[null]", "[2147483648]");
            return AnyValue();
        }

        private string ModelValue() => Pick(Json(model.Name), "\"gpt-4\"", "\"\"", "null", "3", Json(model.Name + "\u0000"));

        private string MaxTokensValue() => Pick("0", "-1", (model.ContextLength - 8).ToString(CultureInfo.InvariantCulture),
            model.ContextLength.ToString(CultureInfo.InvariantCulture), "2147483647", "-2147483648", "2147483648", "1e308", "1.5", "\"4\"", "null");

        private string IntValue() => Pick("0", "-1", "1", "2", "16", "17", "20", "21", "64", "65", "2147483647", "-2147483648",
            "2147483648", "-2147483649", "9223372036854775807", "1e308", "-1e308", "1.5", "1e-320", "\"1\"", "true", "null", "[]", "{}");

        private string FloatValue() => Pick("0", "-0.0", "1", "2", "2.0000001", "-2.0000001", "1e-45", "1e39", "-1e39", "1e308", "-1e308",
            "NaN", "Infinity", "-Infinity", "\"NaN\"", "\"Infinity\"", "0.5", "-1", "101", "true", "null", "\"x\"", "[]");

        /// <summary>Any JSON value (and some that are not JSON: NaN, Infinity, deep or unclosed nesting).</summary>
        private string AnyValue()
        {
            double r = Uniform();
            if (r < 0.25) return IntValue();
            if (r < 0.45) return FloatValue();
            if (r < 0.60) return StringValue(shortOnly: true);
            if (r < 0.70) return Pick("true", "false", "null", "[]", "{}", "[[]]", "{\"a\":{}}", "[1,\"a\",null,{}]");
            if (r < 0.80)
            {
                int depth = Chance(0.5) ? Int(60, 70) : Int(100, 50_000);
                _notes.Add($"nesting {depth}");
                return Chance(0.5) ? new string('[', depth) + new string(']', depth) : string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth);
            }
            if (r < 0.85) return Pick("[1,2", "{\"a\":", "tru", "'single'", "01", "1.", ".5", "+1", "0x10", "1_000", "undefined");
            if (r < 0.92) return Json(Enumerable.Range(0, Int(0, 50)).Select(i => i).ToArray());
            return Json(new string('z', Int(0, 200_000)));
        }

        private string RandomName() => Pick("foo", "__proto__", "constructor", "", "MAX_TOKENS", "maxTokens", "prompt ", "\u00e9", "x-" + Int(0, 999), "max_tokens\u0000");

        // ---------- bytes and framing ----------

        private byte[] MutateBytes(byte[] body)
        {
            double r = Uniform();
            if (body.Length == 0) return [0xFF];
            if (r < 0.3)
            {
                _notes.Add("cut");
                return body[..Int(0, body.Length - 1)];
            }
            if (r < 0.6)
            {
                // invalid UTF-8 inside the body (often inside a string value)
                byte[][] bad = [[0xFF], [0xC3, 0x28], [0xE2, 0x82], [0xF0, 0x28, 0x8C, 0xBC], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80]];
                var b = bad[Int(0, bad.Length - 1)];
                int at = IndexAfterQuote(body);
                _notes.Add("invalid UTF-8");
                return [.. body[..at], .. b, .. body[at..]];
            }
            if (r < 0.75)
            {
                var copy = (byte[])body.Clone();
                for (int i = 0, n = Int(1, 4); i < n; i++) copy[Int(0, copy.Length - 1)] = (byte)Int(0, 255);
                _notes.Add("bytes flipped");
                return copy;
            }
            if (r < 0.85)
            {
                _notes.Add("not an object");
                return Encoding.UTF8.GetBytes(Pick("[]", "null", "\"x\"", "1", "", " ", "{}", "[{}]", "true"));
            }
            _notes.Add("BOM/garbage around");
            return Chance(0.5) ? [0xEF, 0xBB, 0xBF, .. body] : [.. body, .. Encoding.UTF8.GetBytes(Pick(" x", "}", "{}", "\u0000"))];
        }

        private int IndexAfterQuote(byte[] body)
        {
            var quotes = new List<int>();
            for (int i = 0; i < body.Length; i++) if (body[i] == (byte)'"') quotes.Add(i + 1);
            return quotes.Count == 0 ? Int(0, body.Length) : quotes[Int(0, quotes.Count - 1)];
        }

        private byte[] Chunk(byte[] body, bool broken)
        {
            var s = new MemoryStream();
            int pos = 0;
            while (pos < body.Length)
            {
                int n = Math.Min(body.Length - pos, Int(1, 4096));
                s.Write(Encoding.ASCII.GetBytes(n.ToString("x", CultureInfo.InvariantCulture) + "\r\n"));
                s.Write(body, pos, n);
                s.Write("\r\n"u8);
                pos += n;
            }
            if (broken)
            {
                _notes.Add("broken chunks");
                s.Write(Encoding.ASCII.GetBytes(Pick("zz\r\n", "-1\r\n", "ffffffffffff\r\nab\r\n", "5\r\nab")));
            }
            else
            {
                s.Write("0\r\n\r\n"u8);
            }
            return s.ToArray();
        }

        private static byte[] Head(string method, string path, IEnumerable<(string Name, string Value)> headers, long? contentLength)
        {
            var sb = new StringBuilder();
            sb.Append(method).Append(' ').Append(path).Append(" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
            foreach (var (name, value) in headers) sb.Append(name).Append(": ").Append(value).Append("\r\n");
            if (contentLength is { } cl) sb.Append("Content-Length: ").Append(cl.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
            else sb.Append("Transfer-Encoding: chunked\r\n");
            sb.Append("\r\n");
            return Encoding.UTF8.GetBytes(sb.ToString());
        }

        // ---------- node routes and malformed requests ----------

        private HttpCase NodeCase()
        {
            (string method, string path, RouteKind kind) = Int(0, 17) switch
            {
                0 => ("GET", "/v1/models", RouteKind.Api),
                1 => ("GET", "/v1/models/" + Pick(model.Name, "gpt-4", "%00", "..%2F..", new string('m', 3000), "%ZZ"), RouteKind.Api),
                2 => (Pick("GET", "POST", "DELETE"), "/v1/" + Pick("embeddings", "unknown", "completions/x", "models/a/b", ""), RouteKind.Api),
                3 => ("GET", "/health", RouteKind.Node),
                4 => ("GET", "/ready", RouteKind.Node),
                5 => ("GET", "/metrics", RouteKind.Node),
                6 => ("GET", "/ops/" + Pick("health", "cluster", "nodes", "experts/cache", "experts/placement", "experts/stats", "actors", "sharding/regions", "sharding/stats", "requests"), RouteKind.Node),
                7 => ("GET", "/ops/log?level=" + Pick("warn", "junk", "none", "", "%00") + "&count=" + Pick("5", "-1", "99999999999", "x", ""), RouteKind.Node),
                8 => ("GET", "/ops/sharding/locate/" + Pick("0.1", "x", "-1.-1", "99999999999.1", "1.2.3", "%20"), RouteKind.Node),
                9 => ("POST", "/ops/requests/" + Pick("nope", "%00", new string('i', 500)) + "/cancel", RouteKind.Node),
                10 => ("POST", "/ops/experts/" + Pick("x", "99.99", "-1.0", "0.999999999999") + "/" + Pick("pin", "unpin", "evict", "junk"), RouteKind.Node),
                11 => ("POST", "/ops/cluster/" + Pick("junk", "down", "leave", "join"), RouteKind.Node),
                12 => ("GET", Pick("/", "/index.html", "/chat.js", "/nope.js", "/%2e%2e/secret"), RouteKind.Node),
                13 => ("POST", "/hubs/chat/negotiate" + Pick("", "?negotiateVersion=1", "?negotiateVersion=x", "?negotiateVersion=99999999999"), RouteKind.Node),
                14 => ("GET", "/hubs/chat" + Pick("", "?id=nope", "?id="), RouteKind.Node),
                15 => (Pick("GET", "PUT", "DELETE", "HEAD", "OPTIONS"), Pick("/tokenize", "/detokenize", "/v1/completions", "/v1/chat/completions"), RouteKind.Api),
                16 => ("GET", "/v1/models?" + new string('q', Int(1000, 7000)), RouteKind.Api),
                _ => ("GET", "/health?x=" + Pick("%", "%%", "%u1234"), RouteKind.Node),
            };
            // Only junk reaches the cluster's actions: never a real address (a fuzz case must not down the node it tests).
            byte[] body = method == "POST" ? Encoding.UTF8.GetBytes(Chance(0.5) ? "{\"address\":\"akka.tcp://moe@10.255.255.1:1\"}" : "{") : [];
            byte[] head = Head(method, path, [("Content-Type", "application/json")], body.Length);
            _notes.Add($"{method} {path}");
            return new HttpCase(index, path, kind, head, body, SendMode.Whole, false, string.Join("; ", _notes));
        }

        private HttpCase MalformedCase()
        {
            string text = Int(0, 9) switch
            {
                0 => "GARBAGE\r\n\r\n",
                1 => "POST /v1/completions HTTP/9.9\r\nHost: x\r\n\r\n",
                2 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
                3 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
                4 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\n{}",
                5 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nBad Header: y\r\nConnection: close\r\n\r\n",
                6 => "GET /" + new string('p', Int(9_000, 40_000)) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                7 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{",
                8 => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Ctl: a\u0001b\r\nConnection: close\r\n\r\n",
                _ => "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\nzz\r\n",
            };
            _notes.Add("malformed: " + (text.Length > 60 ? text[..60] : text).ReplaceLineEndings("\\n"));
            return new HttpCase(index, "(raw)", RouteKind.Malformed, Encoding.Latin1.GetBytes(text), [], SendMode.Whole, false, string.Join("; ", _notes));
        }

        private static string Json<T>(T value) => JsonSerializer.Serialize(value);

        private static string Serialize(Dictionary<string, string> fields) =>
            "{" + string.Join(",", fields.Select(kv => JsonSerializer.Serialize(kv.Key) + ":" + kv.Value)) + "}";
    }
}
