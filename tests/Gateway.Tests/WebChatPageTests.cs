using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using MoeServer.Kernels.Checkpoints;
using MoeServer.Kernels.Config;
using static Microsoft.Playwright.Assertions;

namespace MoeServer.Gateway.Tests;

/// <summary>
/// The chat page at GET / of a real server process, driven in headless Chromium. The browser is Debian's
/// (/usr/bin/chromium): Playwright only runs its bundled driver and never downloads one.
/// </summary>
public sealed partial class WebChatPageTests(ChatPageServer fixture) : IClassFixture<ChatPageServer>
{
    private const string Prompt = "Tell me a long story about a mixture of experts.";

    /// <summary>Text length of the newest assistant bubble.</summary>
    private const string ReplyLength = "() => [...document.querySelectorAll('#messages .assistant')].pop()?.textContent.length ?? 0";

    [Fact]
    public async Task Chat_page_streams_a_reply_and_stop_ends_it()
    {
        var (page, pageErrors) = await fixture.OpenPageAsync();

        // Many tokens asked for, so the reply is still streaming when Stop is pressed.
        await page.FillAsync("#max-tokens", "2000");
        await page.FillAsync("#temperature", "0");
        await page.FillAsync("#prompt", Prompt);
        await page.ClickAsync("#send");
        await Expect(page.Locator("#messages .message.user")).ToHaveTextAsync(Prompt);

        // Text arrives token by token: the assistant bubble's text grows.
        await page.WaitForFunctionAsync($"() => ({ReplyLength})() > 0");
        int early = await page.EvaluateAsync<int>(ReplyLength);
        await page.WaitForFunctionAsync($"n => ({ReplyLength})() > n", early);
        // The experts panel lights the current token's experts and counts them.
        await page.WaitForFunctionAsync("() => document.querySelectorAll('#expert-grid .cell.on').length > 0");
        await page.WaitForFunctionAsync(
            "() => [...document.querySelectorAll('#expert-counts .value')].some(v => Number(v.textContent) > 0)");

        Assert.Equal("streaming", await page.GetAttributeAsync("body", "data-state"));
        await page.ClickAsync("#stop");
        await Expect(page.Locator("body")).ToHaveAttributeAsync("data-state", "idle", new() { Timeout = 5000 });
        var reply = page.Locator("#messages .assistant").Last;
        await Expect(reply).ToHaveAttributeAsync("data-finish", "stopped");
        int tokens = int.Parse(await reply.GetAttributeAsync("data-tokens") ?? "-1", CultureInfo.InvariantCulture);
        Assert.InRange(tokens, 2, 1999);
        await Expect(page.Locator("#status")).ToContainTextAsync("finish: stopped");
        await Expect(page.Locator("#status")).ToContainTextAsync("tokens/s");

        // Nothing arrives after Stop, and the server let go of the generation.
        int stoppedAt = await page.EvaluateAsync<int>(ReplyLength);
        await fixture.RunningRequestsBecomeZeroAsync(TimeSpan.FromSeconds(5));
        await Task.Delay(300);
        Assert.Equal(stoppedAt, await page.EvaluateAsync<int>(ReplyLength));
        Assert.True(await page.Locator("#error").IsHiddenAsync(), await page.Locator("#error").TextContentAsync());
        Assert.True(pageErrors.Count == 0, "the page logged errors:\n" + string.Join("\n", pageErrors));

        // MOE_CHAT_SCREENSHOT=/tmp/chat.png keeps a picture of the page for a human look.
        if (Environment.GetEnvironmentVariable("MOE_CHAT_SCREENSHOT") is { Length: > 0 } shot)
            await page.ScreenshotAsync(new() { Path = shot, FullPage = true });
    }

    [Fact]
    public async Task Chat_page_shows_the_servers_refusal_and_gives_the_prompt_back()
    {
        var (page, _) = await fixture.OpenPageAsync();

        // Beyond the model's 4096-token context: the hub refuses with a HubException that names the limit.
        await page.FillAsync("#max-tokens", "100000");
        await page.FillAsync("#prompt", "hello");
        await page.ClickAsync("#send");

        await Expect(page.Locator("#error")).ToBeVisibleAsync();
        await Expect(page.Locator("#error")).ToContainTextAsync("maximum context length");
        await Expect(page.Locator("body")).ToHaveAttributeAsync("data-state", "idle");
        await Expect(page.Locator("#messages .assistant")).ToHaveCountAsync(0);
        await Expect(page.Locator("#messages .user.failed")).ToHaveCountAsync(1);
        await Expect(page.Locator("#prompt")).ToHaveValueAsync("hello");
        await Expect(page.Locator("#send")).ToBeEnabledAsync();
    }
}

/// <summary>
/// One server process and one headless Chromium for the chat page tests. The model is the small preset rather than
/// <see cref="TinyModel"/>: the tiny one writes 2000 tokens in about a second here, too fast to press Stop while it
/// streams; the small one takes several seconds.
/// </summary>
public sealed partial class ChatPageServer : IAsyncLifetime
{
    private const string ChromiumPath = "/usr/bin/chromium";
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(90);
    private static readonly HttpClient Client = new() { Timeout = TimeSpan.FromSeconds(10) };
    private readonly string _modelRoot = Path.Combine(Path.GetTempPath(), "moe-chat-page-tests-" + Environment.ProcessId);
    private ServerProcess? _server;
    private IPlaywright? _playwright;
    private IBrowser? _browser;
    private string _modelId = "";

    public Uri Url { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        // Fail, not skip: a missing browser must not pass as a green run.
        Assert.True(File.Exists(ChromiumPath),
            $"{ChromiumPath} is missing: the chat page tests drive Debian's Chromium. Install the Debian package " +
            "'chromium' (apt-get install -y chromium; .ci/run does it).");
        string model = Path.Combine(_modelRoot, "mixtral-small");
        CheckpointFactory.Create(CheckpointPresets.Config(ModelArchitecture.Mixtral, CheckpointPreset.Small), model,
            new GeneratorOptions { Seed = 7 });
        _server = ServerProcess.Start("--model", model);
        Url = await _server.ListeningAsync(StartTimeout);
        await Http.WaitReadyAsync(Url, StartTimeout, _server);
        using (var doc = JsonDocument.Parse(await Client.GetStringAsync(new Uri(Url, "/v1/models"))))
            _modelId = doc.RootElement.GetProperty("data")[0].GetProperty("id").GetString()!;

        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"],
        });
    }

    /// <summary>A fresh page at GET /, loaded (model name in the status line, an empty experts grid, idle); and the
    /// errors it logs or throws from then on.</summary>
    public async Task<(IPage Page, List<string> Errors)> OpenPageAsync()
    {
        var context = await _browser!.NewContextAsync(new() { ViewportSize = new() { Width = 1200, Height = 800 } });
        var page = await context.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e);
        page.Console += (_, m) =>
        {
            if (m.Type == "error") errors.Add($"{m.Text} ({m.Location})");
        };
        await page.GotoAsync(Url.ToString());
        await Expect(page.Locator("#status")).ToContainTextAsync(_modelId);
        await Expect(page.Locator("#experts .cell")).Not.ToHaveCountAsync(0);
        await Expect(page.Locator("body")).ToHaveAttributeAsync("data-state", "idle");
        return (page, errors);
    }

    /// <summary>Polls /metrics until <c>moe_requests_running 0</c>.</summary>
    public async Task RunningRequestsBecomeZeroAsync(TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            string metrics = await Client.GetStringAsync(new Uri(Url, "/metrics"));
            var m = RunningLine().Match(metrics);
            Assert.True(m.Success, "/metrics has no moe_requests_running line:\n" + metrics);
            if (double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) == 0) return;
            if (sw.Elapsed > timeout)
                Assert.Fail($"moe_requests_running still {m.Groups[1].Value} {timeout.TotalSeconds} s after Stop:\n{_server!.Output}");
            await Task.Delay(100);
        }
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null) await _browser.DisposeAsync();
        _playwright?.Dispose();
        _server?.Dispose();
        try
        {
            Directory.Delete(_modelRoot, true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    [GeneratedRegex(@"^moe_requests_running (\S+)$", RegexOptions.Multiline)]
    private static partial Regex RunningLine();
}
