import LogPipe

/// Registers the NATS stage types.
public enum NATSStages {
    /// Adds `nats` (source and sink) to `registry`.
    public static func register(in registry: StageRegistry) {
        registry.register(NATSSink.definition)
        registry.register(NATSSource.definition)
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
