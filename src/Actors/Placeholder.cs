namespace MoeServer.Actors; internal static class Placeholder {}
