/// Accepts every record and discards it, acknowledging it as delivered.
/// Useful for benchmarks and for testing sources.
public struct BlackholeSink: Sink {
    /// Creates a blackhole sink.
    public init() {}

    static let definition = StageDefinition.sink(
        "blackhole",
        summary: "Discards every record, acknowledging it as delivered (for benchmarks and tests).",
        options: []
    ) { _ in BlackholeSink() }

    public func run(input: BatchInput, context: StageContext) async throws {
        for await batch in input {
            batch.acknowledge()
            context.metrics.recordsDelivered.add(batch.count, ordering: .relaxed)
        }
    }
}
