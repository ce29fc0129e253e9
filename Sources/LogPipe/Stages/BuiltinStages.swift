/// Registers the stage types that ship with LogPipe.
enum BuiltinStages {
    static func register(in registry: StageRegistry) {
        registry.register(StdinSource.definition)
        registry.register(FileTailSource.definition)
        registry.register(DemoLogsSource.definition)
        registry.register(RegexFilter.definition)
        registry.register(SeverityFilter.definition)
        registry.register(PartitionStage.definition)
        registry.register(ReplaceTransform.definition)
        registry.register(FileSink.definition)
        registry.register(StdoutSink.definition)
        registry.register(BlackholeSink.definition)
    }
}
