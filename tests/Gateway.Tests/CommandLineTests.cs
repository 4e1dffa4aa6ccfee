using MoeServer.Actors.Hosting;
using MoeServer.Kernels.Model;

namespace MoeServer.Gateway.Tests;

public class CommandLineTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData("unknown option --frobnicate", "--frobnicate", "1")]
    [InlineData("--role must be all, gateway or expert", "--role", "boss")]
    [InlineData("--cluster-port must be a port number", "--cluster-port", "70000")]
    [InlineData("is not host:port", "--seed-nodes", "127.0.0.1:4053,nohost")]
    [InlineData("does not exist", "--model", "/nonexistent/model/dir")]
    [InlineData("--device must be cpu or cuda:N", "--device", "tpu")]
    [InlineData("--precision must be bf16 or f32", "--precision", "fp8")]
    [InlineData("is not an http:// or https:// URL", "--urls", "ftp://127.0.0.1:21")]
    [InlineData("--config: file", "--config", "/nonexistent.hocon")]
    [InlineData("needs an explicit port", "--ops-urls", "http://127.0.0.1:0")]
    [InlineData("is the ops listener's", "--urls", "http://127.0.0.1:9131", "--ops-urls", "http://127.0.0.1:9131")]
    [InlineData("needs a value", "--role")]
    [InlineData("unexpected argument", "serve")]
    public void Bad_arguments_exit_2_with_a_message_on_stderr(string message, params string[] args)
    {
        var (code, stdout, stderr) = ServerProcess.RunToExit(Timeout, args);
        Assert.True(code == 2, $"exit code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("listening on", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_value_in_a_config_file_exits_2()
    {
        string file = Path.Combine(Path.GetTempPath(), $"moe-gateway-bad-{Guid.NewGuid():N}.hocon");
        File.WriteAllText(file, "moe.node.precision = f8\n");
        try
        {
            var (code, _, stderr) = ServerProcess.RunToExit(Timeout, "--config", file, "--model", TinyModel.Dir);
            Assert.Equal(2, code);
            Assert.Contains("precision", stderr, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Help_prints_the_options_and_exits_0()
    {
        var (code, stdout, _) = ServerProcess.RunToExit(Timeout, "--help");
        Assert.Equal(0, code);
        foreach (var option in new[] { "--role", "--cluster-port", "--seed-nodes", "--model", "--device", "--precision", "--config", "--urls" })
            Assert.Contains(option, stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_become_hocon_overrides_that_win_over_the_files()
    {
        using var dir = new TempModelDir("we\"ird \\ path");
        var cl = ServerCommandLine.Parse(["--role", "expert", "--cluster-port", "4054", "--seed-nodes", "127.0.0.1:4053, 10.0.0.2:4053",
            "--model", dir.Path, "--device", "cpu", "--precision=f32", "--hostname", "node-1"]);
        var settings = MoeSettings.Load(cl.Role, cl.ToHocon(), cl.ConfigFile);
        Assert.Equal(NodeRole.Expert, settings.Node.Role);
        Assert.Equal(4054, settings.Node.ClusterPort);
        Assert.Equal(["127.0.0.1:4053", "10.0.0.2:4053"], settings.Node.SeedNodes);
        Assert.Equal(Path.GetFullPath(dir.Path), settings.Node.ModelDir);
        Assert.Equal(WeightPrecision.F32, settings.Node.Precision);
        Assert.Equal("node-1", settings.Node.Hostname);
        Assert.Equal(["akka.tcp://moe@127.0.0.1:4053", "akka.tcp://moe@10.0.0.2:4053"], settings.Node.SeedAddresses());
        Assert.Equal([ServerCommandLine.DefaultUrls], cl.Urls);
        Assert.Empty(Gateway.Ops.OpsOptions.FromConfig(settings.Hocon).Urls);
    }

    [Fact]
    public void Ops_urls_become_the_ops_listener_setting()
    {
        var cl = ServerCommandLine.Parse(["--model", TinyModel.Dir, "--ops-urls", "http://127.0.0.1:9000; http://[::1]:9001"]);
        var ops = Gateway.Ops.OpsOptions.FromConfig(MoeSettings.Load(cl.Role, cl.ToHocon(), cl.ConfigFile).Hocon);
        Assert.Equal(["http://127.0.0.1:9000", "http://[::1]:9001"], ops.Urls);
        Assert.Equal([9000, 9001], ops.Ports.Order());
    }

    [Fact]
    public void A_config_file_is_read_and_the_command_line_wins_over_it()
    {
        string file = Path.Combine(Path.GetTempPath(), $"moe-gateway-{Guid.NewGuid():N}.hocon");
        File.WriteAllText(file, "moe.node { role = expert\n cluster-port = 5000\n device = \"cuda:1\" }\nmoe.scheduler.max-batch-tokens = 128\n");
        try
        {
            var cl = ServerCommandLine.Parse(["--config", file, "--cluster-port", "5001"]);
            var settings = MoeSettings.Load(cl.Role, cl.ToHocon(), cl.ConfigFile);
            Assert.Equal(NodeRole.Expert, settings.Node.Role);
            Assert.Equal(5001, settings.Node.ClusterPort);
            Assert.Equal("cuda:1", settings.Node.Device);
            Assert.Equal(128, settings.Scheduler.MaxBatchTokens);
        }
        finally
        {
            File.Delete(file);
        }
    }

    private sealed class TempModelDir : IDisposable
    {
        public TempModelDir(string name)
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"moe-gateway-{Guid.NewGuid():N}", name);
            Directory.CreateDirectory(Path);
            File.WriteAllText(System.IO.Path.Combine(Path, "config.json"), "{}");
        }

        public string Path { get; }

        public void Dispose() => Directory.Delete(System.IO.Path.GetDirectoryName(Path)!, true);
    }
}
