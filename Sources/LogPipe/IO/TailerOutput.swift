import Logging

/// Where a ``FileTailer`` sends the lines it reads, and how it learns to
/// stop: a source's ``SourceContext`` in a pipeline, a collector in a test.
protocol TailerOutput: Sendable {
    /// The stage's name (records' `source`, the checkpoint file's name).
    var name: String { get }
    /// Where warnings about files go.
    var logger: Logger { get }
    /// Counters (`truncations`, `files_parked`, `oversize_lines`, …).
    var metrics: StageMetrics { get }
    /// True once the tailer should return.
    var isStopping: Bool { get }
    /// Suspends until the tailer should stop.
    func waitForStop() async
    /// Sends one file's records downstream, suspending while downstream is
    /// full; `delivered` gets the indices of records done downstream (each
    /// exactly once, in any order, from any thread). Checkpoints move only
    /// through it.
    func send(_ records: [Record], delivered: @escaping @Sendable ([Int]) -> Void) async throws
}

extension SourceContext: TailerOutput {
    func send(_ records: [Record], delivered: @escaping @Sendable ([Int]) -> Void) async throws {
        try await emit(records) { _, completed in delivered(completed.map(\.index)) }
    }
}
