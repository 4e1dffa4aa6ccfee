using Akka.Actor;
using Akka.Event;
using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>
/// One routed expert ("{layer}.{expert}") as a sharded entity: loads its FFN weights from the checkpoint when it
/// starts on a node and runs the rows the router sends it. A weight-load failure is kept and reported to every
/// caller (naming the file and tensor) rather than crashing the node.
/// </summary>
public sealed class ExpertEntity : ReceiveActor
{
    private readonly ExpertId _id;
    private readonly ExpertWeightSource _source;
    private readonly ExpertWorkCounters _work;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly string _node;
    private ExpertFfn? _ffn;
    private string? _loadError;

    public ExpertEntity(string entityId, ExpertWeightSource source, ExpertWorkCounters work)
    {
        _id = ExpertId.Parse(entityId);
        _source = source;
        _work = work;
        _node = ((ExtendedActorSystem)Context.System).Provider.DefaultAddress.ToString();
        Receive<ExpertProtocol.RunBatch>(Run);
        Receive<ExpertProtocol.Ping>(_ => Sender.Tell(new ExpertProtocol.Pong(_id, _node, _ffn is not null, _loadError)));
    }

    public static Props PropsFor(string entityId, ExpertWeightSource source, ExpertWorkCounters work) =>
        Props.Create(() => new ExpertEntity(entityId, source, work)).WithDispatcher(DispatcherId);

    /// <summary>The dispatcher expert entities run on (hocon/base.hocon).</summary>
    public const string DispatcherId = "moe-expert-dispatcher";

    protected override void PreStart()
    {
        try
        {
            var (ffn, took) = _source.Load(_id);
            _ffn = ffn;
            _work.Loaded();
            _log.Debug("expert {0} loaded on {1} in {2:F1} ms", _id, _node, took.TotalMilliseconds);
        }
        catch (Exception ex)
        {
            _loadError = $"expert {_id} could not be loaded on {_node}: {ex.Message}";
            _log.Error(ex, "{0}", _loadError);
        }
    }

    private void Run(ExpertProtocol.RunBatch m)
    {
        if (_ffn is null)
        {
            Sender.Tell(new ExpertProtocol.BatchFailed(_id, m.StepId, _loadError ?? $"expert {_id} has no weights"));
            return;
        }
        using var span = EngineTracing.StartExpertSpan(m.TraceParent, _id.EntityId);
        span?.SetTag("moe.rows", m.Input.Rows);
        try
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            var y = _ffn.Forward(m.Input.Data, m.Input.Rows);
            var took = System.Diagnostics.Stopwatch.GetElapsedTime(t0);
            double ms = took.TotalMilliseconds;
            _work.Ran(_id, m.Input.Rows, took);
            Sender.Tell(new ExpertProtocol.BatchDone(_id, m.StepId, new ActivationBlock(m.Input.Rows, m.Input.Width, y), ms));
        }
        catch (Exception ex)
        {
            string reason = $"expert {_id} failed on {_node} (step {m.StepId}): {ex.Message}";
            _log.Error(ex, "[{0}] {1}", string.Join(",", m.RequestIds), reason);
            Sender.Tell(new ExpertProtocol.BatchFailed(_id, m.StepId, reason));
        }
    }

    protected override void PostStop()
    {
        if (_ffn is not null) _work.Unloaded();
        _ffn?.Dispose();
        _ffn = null;
    }
}
