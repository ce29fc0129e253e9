import NIOCore
import Synchronization
import Testing

@testable import LogPipe

/// Prefixes each record's text with `tag`.
private struct TagTransform: BatchTransform {
    var producedFields: Set<String> { [] }
    let tag: String
    func transform(_ batch: inout Batch) throws {
        for index in batch.records.indices {
            batch.records[index].bytes = ByteBuffer(string: tag + batch.records[index].text)
        }
    }
}

/// Emits numbers taken from a shared cursor, as a file tail reads from a
/// shared checkpoint: a replaced instance goes on where the old one stopped.
/// At each number of `cursor.holds` it waits for that gate (or a stop), so
/// that a test's reload always finds the pipeline running.
private struct CursorSource: Source {
    var producedFields: Set<String> { [] }
    let cursor: Shared
    let end: Int
    let batchSize: Int

    func run(_ context: SourceContext) async throws {
        while !context.isStopping {
            let first = cursor.value.load(ordering: .relaxed)
            guard first < end else { return }
            if let gate = cursor.holds[first] {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await gate.wait() }
                    group.addTask { await context.waitForStop() }
                    await group.next()
                    group.cancelAll()
                }
                if context.isStopping { return }
            }
            // A batch ends at a hold, so that the next one starts there.
            let last = cursor.holds.keys.filter { $0 > first }.reduce(min(first + batchSize, end)) { min($0, $1) }
            let records = (first..<last).map {
                Record(
                    bytes: ByteBuffer(string: String($0)), source: context.name, origin: "test", host: "h",
                    receivedAt: .now())
            }
            cursor.value.store(last, ordering: .relaxed)
            try await context.emit(records)
        }
    }
}

private final class Shared: Sendable {
    let value = Atomic<Int>(0)
    /// Where the source waits for a gate; each is opened by the test.
    let holds: [Int: Gate]

    init(holdingAt positions: [Int] = []) {
        holds = Dictionary(uniqueKeysWithValues: positions.map { ($0, Gate()) })
    }

    /// Lets the source go on past `position`.
    func release(_ position: Int) { holds[position]!.open() }
}

/// The source `in`: numbers 0 ..< ReloadTests.total from `cursor`.
private func numbers(from cursor: Shared, batchSize: Int = 50, config: String = "s") -> Pipeline.Node {
    node("in", .source(CursorSource(cursor: cursor, end: ReloadTests.total, batchSize: batchSize)), config: config)
}

private func node(_ name: String, _ stage: AnyStage, inputs: [String] = [], config: String) -> Pipeline.Node {
    Pipeline.Node(name: name, stage: stage, inputs: inputs, typeName: "test", configuration: config)
}

private func graph(
    _ nodes: [Pipeline.Node], dataDirectory: String = "/nonexistent", shutdownTimeout: Duration = .seconds(60)
) throws -> Pipeline {
    var pipeline = Pipeline(
        settings: PipelineSettings(dataDirectory: dataDirectory, shutdownTimeout: shutdownTimeout, edgeCapacity: 2))
    for node in nodes { try pipeline.add(node) }
    return pipeline
}

/// The numbers in `texts` after their tag, and the tags in order of appearance.
private func split(_ texts: [String]) -> (numbers: [Int], tags: [String]) {
    var numbers: [Int] = []
    var tags: [String] = []
    for text in texts {
        let tag = String(text.prefix { !$0.isNumber })
        numbers.append(Int(text.dropFirst(tag.count))!)
        if tags.last != tag { tags.append(tag) }
    }
    return (numbers, tags)
}

private func isRejected(_ error: any Error) -> Bool {
    if case .rejected = error as? ReloadError { return true }
    return false
}

@Suite struct ReloadTests {
    static let total = 100_000

    @Test func aChangedTransformIsSwappedWithEveryRecordOnceAndInOrder() async throws {
        let shared = Shared(holdingAt: [90_000])
        let collected = LockedBox<[String]>([])
        let source = numbers(from: shared)
        let sink = node("out", .sink(CollectingSink(collected: collected)), inputs: ["tag"], config: "k")
        let runner = PipelineRunner(
            pipeline: try graph([
                source, node("tag", .transform(TagTransform(tag: "a")), inputs: ["in"], config: "a"), sink,
            ]))
        let run = Task { try await runner.run() }
        try await eventually { collected.withLock { $0.count } > 10_000 }
        let report = try await runner.reload(
            to: try graph([source, node("tag", .transform(TagTransform(tag: "b")), inputs: ["in"], config: "b"), sink]))
        #expect(report.changed == ["tag"])
        #expect(report.unchanged == ["in", "out"])
        #expect(report.stillDraining.isEmpty)
        shared.release(90_000)
        let summary = try await run.value
        #expect(summary.isClean)
        let (numbers, tags) = split(collected.withLock { $0 })
        #expect(numbers == Array(0..<Self.total))
        #expect(tags == ["a", "b"])
        #expect(summary.progress.reloads == 1)
    }

    @Test func aChangedSinkDrainsBeforeTheNewOneTakesOver() async throws {
        let shared = Shared(holdingAt: [90_000])
        let first = LockedBox<[String]>([])
        let second = LockedBox<[String]>([])
        let source = numbers(from: shared)
        let runner = PipelineRunner(
            pipeline: try graph([
                source, node("out", .sink(CollectingSink(collected: first)), inputs: ["in"], config: "1"),
            ]))
        let run = Task { try await runner.run() }
        try await eventually { first.withLock { $0.count } > 10_000 }
        try await runner.reload(
            to: try graph([source, node("out", .sink(CollectingSink(collected: second)), inputs: ["in"], config: "2")]))
        shared.release(90_000)
        let summary = try await run.value
        #expect(summary.isClean)
        let before = first.withLock { $0 }.map { Int($0)! }
        let after = second.withLock { $0 }.map { Int($0)! }
        #expect(!after.isEmpty)
        #expect(before + after == Array(0..<Self.total))
    }

    @Test func aChangedSourceStopsBeforeTheNewOneReads() async throws {
        let shared = Shared(holdingAt: [90_000])
        let collected = LockedBox<[String]>([])
        let sink = node("out", .sink(CollectingSink(collected: collected)), inputs: ["in"], config: "k")
        let runner = PipelineRunner(
            pipeline: try graph([
                numbers(from: shared, batchSize: 50, config: "1"),
                sink,
            ]))
        let run = Task { try await runner.run() }
        try await eventually { collected.withLock { $0.count } > 10_000 }
        let report = try await runner.reload(
            to: try graph([
                numbers(from: shared, batchSize: 100, config: "2"),
                sink,
            ]))
        #expect(report.changed == ["in"])
        shared.release(90_000)
        let summary = try await run.value
        #expect(summary.isClean)
        #expect(collected.withLock { $0 }.map { Int($0)! } == Array(0..<Self.total))
    }

    @Test func anAddedSinkGetsWhatFollowsAndARemovedOneDrains() async throws {
        let shared = Shared(holdingAt: [50_000, 90_000])
        let main = LockedBox<[String]>([])
        let audit = LockedBox<[String]>([])
        let source = numbers(from: shared)
        let mainSink = node("out", .sink(CollectingSink(collected: main)), inputs: ["in"], config: "k")
        let auditSink = node("audit", .sink(CollectingSink(collected: audit)), inputs: ["in"], config: "a")
        let runner = PipelineRunner(pipeline: try graph([source, mainSink]))
        let run = Task { try await runner.run() }
        try await eventually { main.withLock { $0.count } > 10_000 }
        let added = try await runner.reload(to: try graph([source, mainSink, auditSink]))
        #expect(added.added == ["audit"])
        shared.release(50_000)
        try await eventually { audit.withLock { $0.count } > 10_000 }
        let removed = try await runner.reload(to: try graph([source, mainSink]))
        #expect(removed.removed == ["audit"])
        #expect(removed.stillDraining.isEmpty)
        shared.release(90_000)
        let summary = try await run.value
        #expect(summary.isClean)
        #expect(main.withLock { $0 }.map { Int($0)! } == Array(0..<Self.total))
        // The audit sink saw one unbroken stretch, from its start to its removal.
        let seen = audit.withLock { $0 }.map { Int($0)! }
        let firstSeen = try #require(seen.first)
        #expect(seen == Array(firstSeen..<(firstSeen + seen.count)))
        #expect(firstSeen > 0 && firstSeen + seen.count < Self.total)
        #expect(!runner.progress().stages.contains { $0.name == "audit" })
    }

    @Test func aReloadThatCannotApplyLeavesThePipelineRunning() async throws {
        let shared = Shared(holdingAt: [50_000])
        let collected = LockedBox<[String]>([])
        let source = numbers(from: shared)
        let sink = node("out", .sink(CollectingSink(collected: collected)), inputs: ["in"], config: "k")
        let runner = PipelineRunner(pipeline: try graph([source, sink]))
        await #expect(throws: ReloadError.notRunning(.notStarted)) {
            try await runner.reload(to: try graph([source, sink]))
        }
        let run = Task { try await runner.run() }
        await runner.waitUntilStarted()
        // A stage that changes its kind, and a moved data_dir, cannot apply live.
        let kindChanged = try graph([
            source, node("out", .transform(PassTransform()), inputs: ["in"], config: "k"),
            node("sink", .sink(CollectingSink(collected: collected)), inputs: ["out"], config: "k"),
        ])
        await #expect(performing: { try await runner.reload(to: kindChanged) }, throws: isRejected)
        await #expect(
            performing: { try await runner.reload(to: try graph([source, sink], dataDirectory: "/elsewhere")) },
            throws: isRejected)
        // A graph with no sink is refused before anything is touched.
        await #expect(performing: { try await runner.reload(to: try graph([source])) }, throws: isRejected)
        shared.release(50_000)
        let summary = try await run.value
        #expect(summary.isClean)
        #expect(collected.withLock { $0 }.map { Int($0)! } == Array(0..<Self.total))
        #expect(summary.progress.failedReloads == 4)
        #expect(summary.progress.reloads == 0)
    }

    @Test func thePlanKeepsUnchangedStagesAndMovesOnlyTheEdgesThatChange() throws {
        let source = node("in", .source(CursorSource(cursor: Shared(), end: 1, batchSize: 1)), config: "s")
        let old = try graph([
            source,
            node("filter", .transform(PassTransform()), inputs: ["in"], config: "regex: a"),
            node("out", .sink(StuckSink()), inputs: ["filter"], config: "path: a"),
            node("old", .sink(StuckSink()), inputs: ["in"], config: "x"),
        ])
        let new = try graph([
            source,
            node("filter", .transform(PassTransform()), inputs: ["in"], config: "regex: b"),
            node("out", .sink(StuckSink()), inputs: ["filter", "in"], config: "path: a"),
            node("new", .sink(StuckSink()), inputs: ["filter"], config: "y"),
        ])
        let plan = ReloadPlan(from: old, to: new)
        #expect(plan.unchanged == ["in", "out"])
        #expect(plan.changed == ["filter"])
        #expect(plan.added == ["new"])
        #expect(plan.removed == ["old"])
        #expect(
            plan.edgesAdded == [.init(producer: "in", consumer: "out"), .init(producer: "filter", consumer: "new")])
        #expect(plan.edgesRemoved == [.init(producer: "in", consumer: "old")])
        #expect(plan.problems.isEmpty)
        // Built in code without a configuration: always swapped.
        var unnamed = try graph([source, node("out", .sink(StuckSink()), inputs: ["in"], config: "k")])
        unnamed = try graph(
            unnamed.nodes.map {
                var node = $0; node.configuration = nil; return node
            })
        #expect(ReloadPlan(from: unnamed, to: unnamed).changed == ["in", "out"])
    }

    @Test func aDetachedConsumerLeavesTheQueueToTheNextOne() async throws {
        let channel = BoundedChannel<Int>(capacity: 4)
        let old = channel.consumerGeneration
        try await channel.send(1)
        #expect(await channel.receive(generation: old) == 1)
        // The old consumer waits on an empty channel; a detach ends its input.
        let waiting = Task { await channel.receive(generation: old) }
        let next = channel.detachConsumer()
        #expect(await waiting.value == nil)
        try await channel.send(2)
        try await channel.send(3)
        #expect(await channel.receive(generation: old) == nil)
        #expect(channel.tryReceive(generation: old) == nil)
        channel.finishProducer()
        var rest: [Int] = []
        while let element = await channel.receive(generation: next) { rest.append(element) }
        #expect(rest == [2, 3])
    }
}
