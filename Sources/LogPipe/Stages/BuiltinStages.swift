/// Registers the stage types that ship with LogPipe.
enum BuiltinStages {
    static func register(in registry: StageRegistry) {
        registry.register(StdinSource.definition)
        registry.register(FileSource.definition)
        registry.register(DemoLogsSource.definition)
        registry.register(RegexTransform.definition)
        registry.register(SeverityTransform.definition)
        registry.register(PartitionTransform.definition)
        registry.register(ReplaceTransform.definition)
        registry.register(ExecTransform.definition)
        registry.register(FileSink.definition)
        registry.register(StdoutSink.definition)
        registry.register(BlackholeSink.definition)
    }
}
