import Foundation
import NATSTestSupport
import NIOCore
import Synchronization
import Testing

@testable import LogPipe

/// Emits `batches` batches of `batchSize` numbered records ("0", "1", ...),
/// counting what it emitted.
struct CountingSource: Source {
    var producedFields: Set<String> { [] }
    let batches: Int
    let batchSize: Int
    let emitted: Counter
    var onAcknowledged: AcknowledgementToken.Handler? = nil

    func run(_ context: SourceContext) async throws {
        var next = 0
        for _ in 0..<batches {
            var records: [Record] = []
            for _ in 0..<batchSize {
                records.append(
                    Record(
                        bytes: ByteBuffer(string: String(next)), source: context.name, origin: "test", host: "h",
                        receivedAt: .now())
                )
                next += 1
            }
            emitted.add(records.count)
            try await context.emit(records, onAcknowledged: onAcknowledged)
            if context.isStopping { return }
        }
    }
}

/// Keeps only the records for which `keep` is true.
struct PredicateFilter: BatchTransform {
    var producedFields: Set<String> { [] }
    let keep: @Sendable (Record) -> Bool
    func transform(_ batch: inout Batch) throws {
        batch.removeAll { !keep($0) }
    }
}

/// Passes batches on unchanged.
struct PassTransform: BatchTransform {
    var producedFields: Set<String> { [] }
    func transform(_ batch: inout Batch) throws {}
}

/// Collects every record's text; optionally waits per batch or before acknowledging.
struct CollectingSink: Sink {
    let collected: LockedBox<[String]>
    var delay: Duration = .zero
    var gate: Gate? = nil
    var onBatch: (@Sendable (Int) -> Void)? = nil

    func run(input: BatchInput, context: StageContext) async throws {
        for await batch in input {
            if delay > .zero { try await Task.sleep(for: delay) }
            if let gate { await gate.wait() }
            let texts = batch.records.map(\.text)
            collected.withLock { $0.append(contentsOf: texts) }
            onBatch?(texts.count)
            batch.acknowledge()
        }
    }
}

/// A sink that receives batches and never acknowledges them.
struct StuckSink: Sink {
    func run(input: BatchInput, context: StageContext) async throws {
        for await _ in input {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    init() {}
    func add(_ amount: Int) { value.add(amount, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

/// A one-shot gate that tasks wait on until it opens.
final class Gate: Sendable {
    private let signal = StopSignal()
    init() {}
    func open() { signal.stop() }
    func wait() async { await signal.wait() }
}

func temporaryDirectory() throws -> String {
    try TestDirectories.make(prefix: "logpipe-test")
}

/// `Tests/Fixtures`, found from this file's path.
let fixturesDirectory: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(
        "Fixtures"
    ).path
}()

/// Waits until `condition` holds, polling; fails the test after `timeout`,
/// a safety net long enough for a busy machine (the wait ends as soon as the
/// condition holds).
func eventually(timeout: Duration = .seconds(120), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline {
            Issue.record("condition not reached within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// Keeps every record it receives, then acknowledges them.
struct RecordCollector: Sink {
    let collected: LockedBox<[Record]>
    func run(input: BatchInput, context: StageContext) async throws {
        for await batch in input {
            collected.withLock { $0.append(contentsOf: batch.records) }
            batch.acknowledge()
        }
    }
}

/// Loads `yaml`, replaces its source `in` with `lines`, runs it, and
/// returns what the test sink `collect` (registered here) received.
func runWithLines(_ yaml: String, lines: [String]) async throws -> (records: [Record], summary: RunSummary) {
    let registry = StageRegistry.standard()
    let collected = LockedBox<[Record]>([])
    registry.register(.sink("collect", summary: "test", options: []) { _ in RecordCollector(collected: collected) })
    let result = PipelineLoader(registry: registry, environment: [:]).load(yaml: yaml)
    let pipeline = try #require(result.pipeline, "\(result.diagnostics)")
    var withSource = Pipeline(settings: pipeline.settings)
    let (stream, continuation) = AsyncStream.makeStream(of: String.self)
    for line in lines { continuation.yield(line) }
    continuation.finish()
    try withSource.add("in", source: AsyncSequenceSource(lines: stream, host: "local"))
    for node in pipeline.nodes where node.name != "in" { try withSource.add(node) }
    let summary = try await PipelineRunner(pipeline: withSource).run()
    return (collected.withLock { $0 }, summary)
}
