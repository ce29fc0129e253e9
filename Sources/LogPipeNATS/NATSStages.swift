import LogPipe

/// Registers the NATS stage types.
public enum NATSStages {
    /// Adds `nats` and `jetstream` (sources and sinks) to `registry`.
    public static func register(in registry: StageRegistry) {
        registry.register(NATSSink.definition)
        registry.register(NATSSource.definition)
        registry.register(JetStreamSink.definition)
        registry.register(JetStreamSource.definition)
    }
}

extension StageRegistry {
    /// Every built-in stage type, NATS ones included.
    public static func all() -> StageRegistry {
        let registry = StageRegistry.standard()
        NATSStages.register(in: registry)
        return registry
    }
}
