using System.Text.Json;
using MoeServer.Kernels.Jinja;
using MoeServer.Kernels.Tests.Support;
using MoeServer.Kernels.Tokenization;

namespace MoeServer.Kernels.Tests.Jinja;

/// <summary>
/// Every case in golden/expected.json, rendered by Debian's python3-jinja2 under transformers' settings
/// (golden/render_golden.py), must render byte for byte the same here, or fail where jinja2 fails.
/// </summary>
public class JinjaGoldenTests
{
    private static readonly Lazy<Golden> Data = new(Golden.Load);

    public static TheoryData<string> ConstructCases() => [.. Data.Value.Cases.Where(c => c.Kind == "construct").Select(c => c.Name)];

    public static TheoryData<string> ChatCases() => [.. Data.Value.Cases.Where(c => c.Kind == "chat").Select(c => c.Name)];

    [Fact]
    public void Golden_file_was_made_by_jinja2_and_has_enough_cases()
    {
        Golden g = Data.Value;
        Assert.StartsWith("3.", g.Root.GetProperty("jinja2_version").GetString());
        Assert.True(g.Cases.Count(c => c.Kind == "construct") >= 70, "at least 70 construct cases");
        Assert.True(g.Cases.Count(c => c.Kind == "chat") >= 100, "chat cases for every family");
        Assert.Contains(g.Cases, c => c.Error is null && c.Name.Contains("tool_call", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(ConstructCases))]
    public void Construct_renders_like_jinja2(string name)
    {
        Golden.Case c = Data.Value.Get(name);
        string Render()
        {
            var vars = new Dictionary<string, object?>();
            foreach (JsonProperty p in c.Element.GetProperty("variables").EnumerateObject())
            {
                vars[p.Name] = p.Value.Clone();
            }

            return JinjaTemplate.Parse(c.Element.GetProperty("template").GetString()!).Render(vars, () => Data.Value.Now);
        }

        Check(c, Render);
    }

    [Theory]
    [MemberData(nameof(ChatCases))]
    public void Chat_template_renders_like_jinja2(string name)
    {
        Golden g = Data.Value;
        Golden.Case c = g.Get(name);
        string file = c.Element.GetProperty("template_file").GetString()!;
        string source = File.ReadAllText(Path.Combine(g.Dir, "templates", file));
        JsonElement conv = g.Root.GetProperty("conversations_file").GetProperty("conversations").GetProperty(c.Element.GetProperty("conversation").GetString()!);
        List<ChatMessage> messages = conv.GetProperty("messages").EnumerateArray().Select(ChatMessageJson.Parse).ToList();
        IReadOnlyList<JsonElement>? tools = conv.TryGetProperty("tools", out JsonElement t)
            ? g.Root.GetProperty("conversations_file").GetProperty(t.GetString()!).EnumerateArray().ToList()
            : null;
        Dictionary<string, JsonElement>? kwargs = conv.TryGetProperty("kwargs", out JsonElement kw)
            ? kw.EnumerateObject().ToDictionary(p => p.Name, p => p.Value)
            : null;
        bool agp = c.Element.GetProperty("add_generation_prompt").GetBoolean();
        Check(c, () =>
        {
            ChatTemplate tpl = ChatTemplate.FromJinja(source, g.Bos, g.Eos, file);
            return tpl.Render(messages, agp, tools, kwargs?.ToDictionary(p => p.Key, p => (object?)p.Value), () => g.Now);
        });
    }

    [Fact]
    public void Built_in_templates_are_the_golden_files()
    {
        string dir = Path.Combine(Data.Value.Dir, "templates");
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "builtin_chatml.jinja")), ChatTemplates.ChatMlJinja);
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "builtin_chatml_plain.jinja")), ChatTemplates.ChatMlPlainJinja);
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "builtin_mistral.jinja")), ChatTemplates.MistralInstJinja);
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "builtin_mistral_v0.jinja")), ChatTemplates.MistralInstV0Jinja);
    }

    private static void Check(Golden.Case c, Func<string> render)
    {
        if (c.Error is null)
        {
            Assert.Equal(c.Output, render());
            return;
        }

        Exception ex = Record.Exception(() => render());
        Assert.True(ex is not null, $"jinja2 fails with {c.Error}: {c.Message}; this interpreter rendered without error");
        JinjaException je = ex as JinjaException ?? (ex as ChatTemplateException)?.InnerException as JinjaException
            ?? throw new Xunit.Sdk.XunitException($"expected a JinjaException, got {ex}");
        switch (c.Error)
        {
            case "raise_exception":
                Assert.Equal(JinjaErrorKind.Raised, je.Kind);
                Assert.Equal(c.Message, je.Message);
                Assert.Contains(c.Message!, ex.Message, StringComparison.Ordinal);
                break;
            case "TemplateSyntaxError":
                Assert.True(je.Kind is JinjaErrorKind.Syntax or JinjaErrorKind.Unsupported, $"{je.Kind}: {je.Message}");
                Assert.True(je.Line > 0, "syntax errors name the line");
                break;
            default:
                Assert.Equal(JinjaErrorKind.Runtime, je.Kind);
                break;
        }
    }

    private sealed class Golden
    {
        private Golden(string dir, JsonElement root)
        {
            Dir = dir;
            Root = root;
            Cases = root.GetProperty("cases").EnumerateArray().Select(e => new Case(e)).ToList();
            Now = DateTime.Parse(root.GetProperty("now").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
            Bos = root.GetProperty("bos_token").GetString()!;
            Eos = root.GetProperty("eos_token").GetString()!;
        }

        public string Dir { get; }

        public JsonElement Root { get; }

        public List<Case> Cases { get; }

        public DateTime Now { get; }

        public string Bos { get; }

        public string Eos { get; }

        public Case Get(string name) => Cases.Single(c => c.Name == name);

        public static Golden Load()
        {
            string dir = Path.Combine(TrainedModels.RepoRoot(), "tests", "Kernels.Tests", "Jinja", "golden");
            using var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")));
            using var conversations = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "conversations.json")));
            var merged = new Dictionary<string, JsonElement>();
            foreach (JsonProperty p in expected.RootElement.EnumerateObject())
            {
                merged[p.Name] = p.Value.Clone();
            }

            merged["conversations_file"] = conversations.RootElement.Clone();
            return new Golden(dir, JsonSerializer.SerializeToElement(merged));
        }

        public sealed class Case(JsonElement e)
        {
            public JsonElement Element { get; } = e;

            public string Name { get; } = e.GetProperty("name").GetString()!;

            public string Kind { get; } = e.GetProperty("kind").GetString()!;

            public string? Output { get; } = e.TryGetProperty("output", out JsonElement o) ? o.GetString() : null;

            public string? Error { get; } = e.TryGetProperty("error", out JsonElement x) ? x.GetString() : null;

            public string? Message { get; } = e.TryGetProperty("message", out JsonElement m) ? m.GetString() : null;
        }
    }
}
