using System.Runtime.CompilerServices;

// The benchmark flips internal tuning switches (path, chunking) to compare variants.
[assembly: InternalsVisibleTo("MoeServer.Kernels.Bench")]
