using System.Net.Http.Json;
using System.Text.Json;
using MoeServer.Kernels.Formats.Gguf;
using MoeServer.Kernels.Tokenization;
using MoeServer.Gateway.Tests.Support;

namespace MoeServer.Gateway.Tests;

/// <summary>The server on a GGUF file: /v1/models names the source, completions and chat work with the file's own
/// tokenizer and template, a cluster's nodes all load the same file, and a broken file stops the server with exit 1.</summary>
public class GgufServingTests
{
    private static readonly Lazy<string> Gguf = new(() =>
    {
        string path = Path.Combine(Path.GetDirectoryName(TinyModel.Dir)!, "mixtral-tiny.gguf");
        GgufExporter.Export(TinyModel.Dir, path, new GgufExportOptions { Type = GgmlType.BF16 });
        return path;
    });

    [Fact]
    public async Task A_gguf_model_is_served_and_described_by_v1_models()
    {
        await using var server = await GatewayServer.StartAsync(Gguf.Value);
        var models = await server.GetJsonAsync("/v1/models");
        var card = models.GetProperty("data")[0];
        Assert.Equal("mixtral-tiny", card.GetProperty("id").GetString());
        var source = card.GetProperty("source");
        Assert.Equal("gguf", source.GetProperty("format").GetString());
        Assert.Equal("llama", source.GetProperty("architecture").GetString());
        Assert.Equal(4096, source.GetProperty("context_length").GetInt32());
        Assert.Equal("MOSTLY_BF16", source.GetProperty("file_type").GetString());
        Assert.Equal("mixtral-tiny.gguf", source.GetProperty("files")[0].GetString());

        // The file's tokenizer tokenizes as the checkpoint's tokenizer.json does.
        var hf = HfTokenizer.Load(TinyModel.Dir);
        var tok = await (await server.Http.PostAsJsonAsync("/tokenize", new { prompt = "In the beginning, 12345 ünïcode" })).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(hf.Encode("In the beginning, 12345 ünïcode"), tok.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray());

        var done = await server.Http.PostAsJsonAsync("/v1/completions", new { prompt = "Hello", max_tokens = 5, temperature = 0 });
        Assert.True(done.IsSuccessStatusCode, await done.Content.ReadAsStringAsync());
        var body = await done.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(5, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var chat = await server.Http.PostAsJsonAsync("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "Hi" } }, max_tokens = 3 });
        Assert.True(chat.IsSuccessStatusCode, await chat.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task An_hf_directory_is_described_as_safetensors()
    {
        await using var server = await GatewayServer.StartAsync(TinyModel.Dir);
        var source = (await server.GetJsonAsync("/v1/models")).GetProperty("data")[0].GetProperty("source");
        Assert.Equal("safetensors", source.GetProperty("format").GetString());
        Assert.Equal("mixtral", source.GetProperty("architecture").GetString());
        Assert.Equal(JsonValueKind.Null, source.GetProperty("file_type").ValueKind);
    }

    [Fact]
    public void A_broken_gguf_stops_the_server_with_exit_code_1_naming_the_file()
    {
        string broken = Path.Combine(Path.GetDirectoryName(TinyModel.Dir)!, "broken.gguf");
        var bytes = File.ReadAllBytes(Gguf.Value);
        File.WriteAllBytes(broken, bytes[..(bytes.Length - 5000)]);
        var (code, stdout, stderr) = ServerProcess.RunToExit(TimeSpan.FromSeconds(90), "--model", broken, "--urls", "http://127.0.0.1:0", "--cluster-port", "0");
        Assert.True(code == 1, $"exit code {code}\n{stdout}\n{stderr}");
        Assert.Contains(broken, stdout + stderr, StringComparison.Ordinal);
        Assert.Contains("truncated", stdout + stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("listening on", stdout, StringComparison.Ordinal);
        var (code2, _, err2) = ServerProcess.RunToExit(TimeSpan.FromSeconds(30), "--model", Path.Combine(Path.GetDirectoryName(TinyModel.Dir)!, "missing.gguf"));
        Assert.Equal(2, code2);
        Assert.Contains("missing.gguf", err2, StringComparison.Ordinal);
    }
}
