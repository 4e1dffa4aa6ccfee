using System.Text.Json;
using MoeServer.Kernels.Jinja;

namespace MoeServer.Kernels.Tests.Jinja;

/// <summary>What the golden files cannot show: how errors name constructs and lines, and the .NET entry points.</summary>
public class JinjaTemplateTests
{
    private static string Render(string source, object? vars = null) =>
        JinjaTemplate.Parse(source).Render(vars is null ? new Dictionary<string, object?>() : JsonSerializer.SerializeToElement(vars)
            .EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone()));

    [Theory]
    [InlineData("a\n{% extends 'base.html' %}", "extends", 2)]
    [InlineData("a\nb\n{% include 'x' %}", "include", 3)]
    [InlineData("{% for m in messages %}\n{% import 'x' as y %}{% endfor %}", "import", 2)]
    [InlineData("{{ x }}\n\n{{ x | groupby('a') }}", "groupby", 3)]
    [InlineData("{{ x | no_such_filter }}", "no_such_filter", 1)]
    [InlineData("\n{% if x is frobbed %}{% endif %}", "frobbed", 2)]
    [InlineData("{% for x in xs recursive %}{% endfor %}", "recursive", 1)]
    [InlineData("{{ f(*args) }}", "*args", 1)]
    public void Unsupported_constructs_are_refused_at_parse_time_naming_the_construct_and_line(string source, string construct, int line)
    {
        var ex = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(source));
        Assert.Equal(JinjaErrorKind.Unsupported, ex.Kind);
        Assert.Equal(line, ex.Line);
        Assert.Contains(construct, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"line {line}", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{% if x %}\nnever closed", 2)]
    [InlineData("ok\n{{ 1 + }}", 2)]
    [InlineData("{% endfor %}", 1)]
    [InlineData("{{ 'unterminated }}", 1)]
    [InlineData("a\n\n{% macro m(a=1, b) %}{% endmacro %}", 3)]
    public void Syntax_errors_name_the_line(string source, int line)
    {
        var ex = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(source));
        Assert.Equal(JinjaErrorKind.Syntax, ex.Kind);
        Assert.Equal(line, ex.Line);
    }

    [Fact]
    public void Runtime_errors_name_the_line_of_the_statement()
    {
        var ex = Assert.Throws<JinjaException>(() => Render("line one\n{% for m in messages %}\n{{ m.content.missing.deeper }}{% endfor %}",
            new { messages = new[] { new { content = new { } } } }));
        Assert.Equal(JinjaErrorKind.Runtime, ex.Kind);
        Assert.Equal(3, ex.Line);
        Assert.Contains("'dict object' has no attribute 'missing'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Raise_exception_carries_the_templates_message_unchanged()
    {
        var ex = Assert.Throws<JinjaException>(() => Render("{{ raise_exception('Roles must alternate: ' ~ n) }}", new { n = 3 }));
        Assert.Equal(JinjaErrorKind.Raised, ex.Kind);
        Assert.Equal("Roles must alternate: 3", ex.Message);
    }

    [Fact]
    public void Runaway_macro_recursion_is_an_error_not_a_crash()
    {
        var ex = Assert.Throws<JinjaException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
        Assert.Contains("recursion", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Strftime_now_reads_the_given_clock()
    {
        string s = JinjaTemplate.Parse("{{ strftime_now('%d %b %Y, %-I:%M %p, %A') }}").Render(new Dictionary<string, object?>(), () => new DateTime(2025, 3, 9, 15, 7, 0));
        Assert.Equal("09 Mar 2025, 3:07 PM, Sunday", s);
    }

    [Fact]
    public void Net_values_are_imported_as_python_values()
    {
        var vars = new Dictionary<string, object?>
        {
            ["i"] = 3,
            ["f"] = 1.5f,
            ["list"] = new List<string> { "a", "b" },
            ["map"] = new Dictionary<string, object?> { ["z"] = 1, ["a"] = null },
            ["flag"] = true,
        };
        Assert.Equal("4 2.5 a-b {'z': 1, 'a': None} True", JinjaTemplate.Parse("{{ i + 1 }} {{ f + 1 }} {{ list | join('-') }} {{ map }} {{ flag }}").Render(vars));
        Assert.Throws<ArgumentException>(() => JinjaTemplate.Parse("{{ x }}").Render(new Dictionary<string, object?> { ["x"] = new Uri("http://x") }));
    }

    [Fact]
    public void A_parsed_template_renders_many_times_without_carrying_state()
    {
        var t = JinjaTemplate.Parse("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}");
        Assert.Equal("6", t.Render(new Dictionary<string, object?> { ["xs"] = new[] { 1, 2, 3 } }));
        Assert.Equal("4", t.Render(new Dictionary<string, object?> { ["xs"] = new[] { 4 } }));
    }
}
