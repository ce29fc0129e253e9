import Foundation
import NIOCore
import Synchronization
import Testing

@testable import LogPipe

@Suite struct PipelineRuntimeTests {
    /// A slow sink holds back a fast source: the source never gets further
    /// ahead than the edge capacities allow, and everything arrives in order.
    @Test func slowSinkHoldsBackFastSource() async throws {
        let batchSize = 100
        let batches = 60
        let capacity = 2
        let emitted = Counter()
        let delivered = Counter()
        let collected = LockedBox<[String]>([])
        let maxAhead = Counter()
        let aheadSamples = LockedBox<[Int]>([])

        var pipeline = Pipeline(settings: PipelineSettings(edgeCapacity: capacity))
        try pipeline.add("source", source: CountingSource(batches: batches, batchSize: batchSize, emitted: emitted))
        try pipeline.add("pass", transform: PassTransform(), inputs: ["source"])
        try pipeline.add(
            "slow",
            sink: CollectingSink(collected: collected, delay: .milliseconds(5)) { count in
                // Sampled before this batch is counted as delivered.
                let ahead = emitted.current - delivered.current
                aheadSamples.withLock { $0.append(ahead) }
                delivered.add(count)
            },
            inputs: ["pass"]
        )
        let summary = try await PipelineRunner(pipeline: pipeline).run()
        _ = maxAhead

        // In flight at most: per edge `capacity` queued batches plus one
        // sender suspended on it, one batch in the transform's hands and one
        // in the sink's.
        let bound = (2 * (capacity + 1) + 2) * batchSize
        let samples = aheadSamples.withLock { $0 }
        #expect(samples.max()! <= bound)
        #expect(samples.max()! >= capacity * batchSize)  // the sink really was behind
        #expect(collected.withLock { $0 } == (0..<(batches * batchSize)).map(String.init))
        #expect(summary.isClean)
        #expect(summary.progress.emitted == batches * batchSize)
        #expect(summary.progress.acknowledged == batches * batchSize)
    }

    /// Every record of every batch is reported done exactly once, through a
    /// filter that drops some and a fan-out to two sinks; a kept record is
    /// done only when both sinks acknowledged it.
    @Test func acknowledgementsThroughFilterAndFanOut() async throws {
        let completions = LockedBox<[ObjectIdentifier: [CompletedRecord]]>([:])
        let handler: AcknowledgementToken.Handler = { token, completed in
            completions.withLock { $0[ObjectIdentifier(token), default: []].append(contentsOf: completed) }
        }
        let gate = Gate()
        let fast = LockedBox<[String]>([])
        let slow = LockedBox<[String]>([])
        var pipeline = Pipeline()
        try pipeline.add(
            "source", source: CountingSource(batches: 3, batchSize: 10, emitted: Counter(), onAcknowledged: handler))
        try pipeline.add("evens", transform: PredicateFilter { Int($0.text)! % 2 == 0 }, inputs: ["source"])
        try pipeline.add("fast", sink: CollectingSink(collected: fast), inputs: ["evens"])
        try pipeline.add("gated", sink: CollectingSink(collected: slow, gate: gate), inputs: ["evens"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }

        // Dropped records are done at once; kept ones wait for the gated sink.
        try await eventually { fast.withLock { $0.count } == 15 }
        try await Task.sleep(for: .milliseconds(50))
        let early = completions.withLock { $0.values.flatMap { $0 } }
        #expect(early.count == 15)
        #expect(early.allSatisfy { $0.status == .dropped && $0.index % 2 == 1 })
        #expect(runner.progress().unacknowledged == 15)

        gate.open()
        let summary = try await run.value
        let all = completions.withLock { $0 }
        #expect(all.count == 3)
        for records in all.values {
            #expect(records.count == 10)
            #expect(Set(records.map(\.index)) == Set(0..<10))
            for record in records {
                #expect(record.status == (record.index % 2 == 0 ? .delivered : .dropped))
            }
        }
        #expect(slow.withLock { $0 }.count == 15)
        #expect(summary.isClean)
    }

    @Test func tokenMergesStatusesAndCompletesOnce() {
        let reported = LockedBox<[CompletedRecord]>([])
        let token = AcknowledgementToken(count: 3) { _, completed in
            reported.withLock { $0.append(contentsOf: completed) }
        }
        token.retain(0..<3, extra: 1)  // two branches
        token.release(0..<3, status: .delivered)
        #expect(reported.withLock { $0 }.isEmpty)
        token.release(0..<1, status: .failed)
        token.release(1..<3, status: .dropped)
        token.release(0..<3, status: .delivered)  // stray extra release: ignored
        #expect(token.isComplete)
        #expect(
            reported.withLock { $0 } == [
                CompletedRecord(index: 0, status: .failed), CompletedRecord(index: 1, status: .delivered),
                CompletedRecord(index: 2, status: .delivered),
            ])
    }

    /// Records "line 0" … of every slot of `token`, as its source would emit them.
    static func records(heldBy token: AcknowledgementToken) -> [Record] {
        (0..<token.count).map { index in
            var record = Record(
                bytes: ByteBuffer(string: "line \(index)"), source: "test", origin: "test", host: "h",
                receivedAt: .now())
            record.acknowledgement = AcknowledgementSlot(token: token, index: index)
            return record
        }
    }

    /// A filter that thins a batch out to many short runs still reports the
    /// batch with one handler call per token (one lock, one array), not one
    /// per run: that is what keeps the filter path free of allocations per record.
    @Test func thinnedBatchIsAcknowledgedInOneCall() {
        let calls = LockedBox<[[CompletedRecord]]>([])
        let token = AcknowledgementToken(count: 10) { _, completed in
            calls.withLock { $0.append(completed) }
        }
        var batch = Batch(records: Self.records(heldBy: token))
        batch.removeAll { $0.text.last!.wholeNumberValue! % 2 == 1 }
        #expect(calls.withLock { $0 }.count == 1)
        #expect(calls.withLock { $0 }[0].map(\.index) == [1, 3, 5, 7, 9])
        batch.acknowledge()
        #expect(calls.withLock { $0 }.count == 2)
        #expect(calls.withLock { $0 }[1] == [0, 2, 4, 6, 8].map { CompletedRecord(index: $0, status: .delivered) })
        #expect(token.isComplete)
    }

    /// A part of a batch, some of it given up by a sink: one pass reports the
    /// failed positions as failed and the rest as delivered; records outside
    /// the part stay pending.
    @Test func partOfABatchAcknowledgedWithFailures() {
        let calls = LockedBox<[CompletedRecord]>([])
        let token = AcknowledgementToken(count: 6) { _, completed in
            calls.withLock { $0.append(contentsOf: completed) }
        }
        let records = Self.records(heldBy: token)
        Batch.acknowledge(records[1..<5], failing: [0, 2])
        #expect(
            calls.withLock { $0 }.sorted { $0.index < $1.index } == [
                CompletedRecord(index: 1, status: .failed), CompletedRecord(index: 2, status: .delivered),
                CompletedRecord(index: 3, status: .failed), CompletedRecord(index: 4, status: .delivered),
            ])
        #expect(token.pendingCount == 2)
        Batch.acknowledge(records[5...])
        Batch.acknowledge(records[0..<1])
        #expect(token.isComplete)
    }

    @Test func stopDrainsInFlightRecords() async throws {
        var pipeline = Pipeline()
        try pipeline.add(
            "demo",
            source: DemoLogsSource(
                options: {
                    var o = DemoLogsSource.Options(); o.count = 0; o.batchSize = 50; return o
                }()))
        let collected = LockedBox<[String]>([])
        try pipeline.add("out", sink: CollectingSink(collected: collected, delay: .milliseconds(2)), inputs: ["demo"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }
        try await eventually { collected.withLock { $0.count } > 500 }
        runner.stop()
        let summary = try await run.value
        #expect(summary.isClean)
        #expect(summary.progress.emitted == collected.withLock { $0.count })
    }

    @Test func shutdownDeadlineReportsUnacknowledgedRecords() async throws {
        var pipeline = Pipeline(settings: PipelineSettings(shutdownTimeout: .milliseconds(300)))
        try pipeline.add("source", source: CountingSource(batches: 1000, batchSize: 10, emitted: Counter()))
        try pipeline.add("stuck", sink: StuckSink(), inputs: ["source"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }
        try await eventually { runner.progress().emitted > 0 }
        let stopped = ContinuousClock.now
        runner.stop()
        let summary = try await run.value
        #expect(summary.timedOut)
        #expect(summary.progress.unacknowledged > 0)
        #expect(summary.failure == nil)
        // The run ends at the deadline (300 ms), not when the stuck sink
        // would; the bound is loose so that a busy machine does not fail it.
        #expect(ContinuousClock.now - stopped < .seconds(60))
    }

    @Test func failingStageStopsThePipeline() async throws {
        struct Broken: Error, CustomStringConvertible { var description: String { "disk on fire" } }
        struct FailingSink: Sink {
            func run(input: BatchInput, context: StageContext) async throws {
                for await _ in input { throw Broken() }
            }
        }
        var pipeline = Pipeline()
        try pipeline.add("source", source: CountingSource(batches: 1000, batchSize: 10, emitted: Counter()))
        try pipeline.add("bad", sink: FailingSink(), inputs: ["source"])
        let summary = try await PipelineRunner(pipeline: pipeline).run()
        let failure = try #require(summary.failure)
        #expect("\(failure)" == "stage 'bad' failed: disk on fire")
    }

    @Test func invalidGraphIsRejectedBeforeStarting() async throws {
        var pipeline = Pipeline()
        try pipeline.add("source", source: CountingSource(batches: 1, batchSize: 1, emitted: Counter()))
        try pipeline.add("out", sink: BlackholeSink(), inputs: ["sorce"])
        #expect(throws: PipelineError.self) { try pipeline.validate() }
        await #expect(throws: PipelineError.self) { _ = try await PipelineRunner(pipeline: pipeline).run() }
        #expect(throws: PipelineError.self) { try pipeline.add("out", sink: BlackholeSink(), inputs: ["source"]) }
    }

    @Test func appFeedsThePipelineFromItsOwnAsyncSequence() async throws {
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let acknowledged = Counter()
        var pipeline = Pipeline()
        try pipeline.add(
            "app",
            source: AsyncSequenceSource(lines: lines, host: "my-app") { _, completed in
                acknowledged.add(completed.count)
            }
        )
        try pipeline.add("upper", transform: Uppercase(), inputs: ["app"])
        let collected = LockedBox<[String]>([])
        try pipeline.add("out", sink: CollectingSink(collected: collected), inputs: ["upper"])
        let run = Task { try await PipelineRunner(pipeline: pipeline).run() }
        for index in 0..<2500 { continuation.yield("line \(index)") }
        continuation.finish()
        let summary = try await run.value
        #expect(collected.withLock { $0 } == (0..<2500).map { "LINE \($0)" })
        #expect(acknowledged.current == 2500)
        #expect(summary.isClean)
    }
}

/// A custom transform, as an app would write one.
struct Uppercase: BatchTransform {
    var producedFields: Set<String> { [] }
    func transform(_ batch: inout Batch) throws {
        for index in batch.records.indices {
            let upper = batch.records[index].text.uppercased()
            batch.records[index].bytes = ByteBuffer(string: upper)
        }
    }
}

@Suite struct RunnerReuseTests {
    @Test func aRunnerRunsOnce() async throws {
        var pipeline = Pipeline()
        try pipeline.add("source", source: CountingSource(batches: 1, batchSize: 1, emitted: Counter()))
        try pipeline.add("out", sink: BlackholeSink(), inputs: ["source"])
        let runner = PipelineRunner(pipeline: pipeline)
        #expect(try await runner.run().isClean)
        await #expect(throws: PipelineError.self) { _ = try await runner.run() }
    }
}
