using Akka.Actor;
using Akka.Event;
using MoeServer.Kernels.Model;

namespace MoeServer.Actors.Experts;

/// <summary>
/// One routed expert ("{layer}.{expert}") as a sharded entity: runs the rows the router sends it with weights from
/// the node's <see cref="ExpertResidency"/> (resident, prefetched, or loaded on demand within the node's budget).
/// Its weights are read once when it starts; a
/// failure is kept and reported to every caller (naming the file and tensor) rather than crashing the node.
/// </summary>
public sealed class ExpertEntity : ReceiveActor
{
    private readonly ExpertId _id;
    private readonly ExpertResidency _residency;
    private readonly ExpertWorkCounters _work;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly string _node;
    private string? _loadError;

    public ExpertEntity(string entityId, ExpertResidency residency, ExpertWorkCounters work)
    {
        _id = ExpertId.Parse(entityId);
        _residency = residency;
        _work = work;
        _node = ((ExtendedActorSystem)Context.System).Provider.DefaultAddress.ToString();
        Receive<ExpertProtocol.RunBatch>(Run);
        Receive<ExpertProtocol.Ping>(_ => Sender.Tell(new ExpertProtocol.Pong(_id, _node, _loadError is null, _loadError)));
    }

    public static Props PropsFor(string entityId, ExpertResidency residency, ExpertWorkCounters work) =>
        Props.Create(() => new ExpertEntity(entityId, residency, work)).WithDispatcher(DispatcherId);

    /// <summary>The dispatcher expert entities run on (hocon/base.hocon).</summary>
    public const string DispatcherId = "moe-expert-dispatcher";

    protected override void PreStart()
    {
        try
        {
            _residency.Register(_id);
            _log.Debug("expert {0} started on {1} ({2})", _id, _node, _residency.IsResident(_id) ? "resident" : "not resident: over the budget");
        }
        catch (Exception ex)
        {
            _loadError = $"expert {_id} could not be loaded on {_node}: {ex.Message}";
            _log.Error(ex, "{0}", _loadError);
        }
    }

    private void Run(ExpertProtocol.RunBatch m)
    {
        if (_loadError is not null)
        {
            Sender.Tell(new ExpertProtocol.BatchFailed(_id, m.StepId, _loadError));
            return;
        }
        using var span = EngineTracing.StartExpertSpan(m.TraceParent, _id.EntityId);
        span?.SetTag("moe.rows", m.Input.Rows);
        try
        {
            var ffn = _residency.Acquire(_id, m.StepId);
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            float[] y;
            try
            {
                y = ffn.Forward(m.Input.Data, m.Input.Rows);
            }
            finally
            {
                _residency.Release(_id);
            }
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

    /// <summary>The entity moved to another node or stopped: its weights here are freed.</summary>
    protected override void PostStop() => _residency.Unregister(_id);
}
