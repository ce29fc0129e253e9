import Foundation
import NIOCore
import Testing

@testable import LogPipe

@Suite struct FileSinkTests {
    @Test func writesOneFilePerHostWithFewOpenFiles() async throws {
        let directory = try temporaryDirectory()
        var options = FileSink.Options(path: try Template(directory + "/{host}/app.log"))
        options.maxOpenFiles = 2
        options.fsync = .batch
        var pipeline = Pipeline()
        var demo = DemoLogsSource.Options()
        demo.count = 5000
        demo.hosts = 10
        demo.batchSize = 100
        try pipeline.add("demo", source: DemoLogsSource(options: demo))
        try pipeline.add("files", sink: FileSink(options: options), inputs: ["demo"])
        let summary = try await PipelineRunner(pipeline: pipeline).run()
        #expect(summary.isClean)

        // The same generator, run again, says how many lines each host has.
        let perHost = LockedBox<[String: Int]>([:])
        struct HostCounter: Sink {
            let perHost: LockedBox<[String: Int]>
            func run(input: BatchInput, context: StageContext) async throws {
                for await batch in input {
                    perHost.withLock { counts in for record in batch.records { counts[record.host, default: 0] += 1 } }
                    batch.acknowledge()
                }
            }
        }
        var reference = Pipeline()
        try reference.add("demo", source: DemoLogsSource(options: demo))
        try reference.add("out", sink: HostCounter(perHost: perHost), inputs: ["demo"])
        _ = try await PipelineRunner(pipeline: reference).run()
        let expected = perHost.withLock { $0 }
        #expect(expected.count == 10)
        var total = 0
        for host in DemoLogsSource.hostNames(count: 10) {
            let lines = try String(contentsOfFile: "\(directory)/\(host)/app.log", encoding: .utf8).split(
                separator: "\n")
            total += lines.count
            #expect(lines.count == expected[host])
            #expect(lines.allSatisfy { $0.contains(host) })
        }
        #expect(total == 5000)
    }

    @Test func retriesUntilTheDirectoryBecomesWritableAndLosesNothing() async throws {
        let directory = try temporaryDirectory()
        // A regular file where the sink needs a directory: every open fails
        // (even for root, unlike a permission change).
        let blocker = directory + "/out"
        _ = FileManager.default.createFile(atPath: blocker, contents: Data("not a directory".utf8))
        var options = FileSink.Options(path: try Template(blocker + "/all.log"))
        options.retryBackoff = .milliseconds(10)
        options.maxRetryBackoff = .milliseconds(50)
        let emitted = Counter()
        var pipeline = Pipeline(settings: PipelineSettings(edgeCapacity: 2))
        try pipeline.add("source", source: CountingSource(batches: 100, batchSize: 50, emitted: emitted))
        try pipeline.add("files", sink: FileSink(options: options), inputs: ["source"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }

        try await eventually { runner.progress().stages[1].counters["write_retries", default: 0] >= 5 }
        // Held back: nothing acknowledged, and the source is stuck within the edge bound.
        #expect(runner.progress().acknowledged == 0)
        #expect(emitted.current <= (2 + 2) * 50)

        try FileManager.default.removeItem(atPath: blocker)
        let summary = try await run.value
        #expect(summary.isClean)
        let lines = try String(contentsOfFile: blocker + "/all.log", encoding: .utf8).split(separator: "\n").map(
            String.init)
        #expect(lines == (0..<5000).map(String.init))
    }

    @Test func intervalFsyncAcknowledgesAfterTheSync() async throws {
        let directory = try temporaryDirectory()
        var options = FileSink.Options(path: try Template(directory + "/all.log"))
        options.fsync = .interval
        options.fsyncInterval = .seconds(2)
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        let acknowledged = Counter()
        var pipeline = Pipeline()
        try pipeline.add("app", source: AsyncSequenceSource(lines: lines) { _, done in acknowledged.add(done.count) })
        try pipeline.add("files", sink: FileSink(options: options), inputs: ["app"])
        let run = Task { try await PipelineRunner(pipeline: pipeline).run() }
        continuation.yield("one")
        // Written at once, acknowledged only after the next interval's sync,
        // even though no further input arrives.
        try await eventually { (try? String(contentsOfFile: directory + "/all.log", encoding: .utf8)) == "one\n" }
        #expect(acknowledged.current == 0)
        try await eventually { acknowledged.current == 1 }
        continuation.finish()
        #expect(try await run.value.isClean)
    }
}

@Suite struct GroupCommitTests {
    func record(_ offset: Int64, host: String, floor: Int64? = nil) -> Record {
        var record = Record(
            bytes: ByteBuffer(string: "line \(offset)"), source: "logs", origin: "logs.\(host)", host: host,
            receivedAt: .now(), offset: offset, streamID: "LOGS/c")
        record.offsetFloor = floor
        return record
    }

    /// Batches committed together: a message delivered again while its first
    /// delivery is in the same group (not in the ledger yet) is written once.
    @Test func redeliveryInsideOneGroupIsWrittenOnce() throws {
        let directory = try temporaryDirectory()
        let sink = FileSink(options: FileSink.Options(path: try Template(directory + "/{host}.log")))
        let ledger = WrittenLedger(directory: directory, stage: "out")
        ledger.update(directory + "/a.log", size: 0, offsets: ["LOGS/c": [1]])
        let group = [record(1, host: "a"), record(2, host: "a"), record(3, host: "b"), record(2, host: "a", floor: 0)]
        let selected = sink.selectUnwritten(group, ledger: ledger, grouped: true)
        #expect(selected.fresh.map(\.offset) == [2, 3])  // 1: in the ledger, the second 2: earlier in the group
        #expect(selected.paths == [directory + "/a.log", directory + "/b.log"])
        #expect(selected.skipped == 2)
        #expect(selected.offsets == [directory + "/a.log": ["LOGS/c": [2]], directory + "/b.log": ["LOGS/c": [3]]])
        #expect(selected.floors == ["LOGS/c": 0])
        // One batch alone skips only what the ledger holds.
        #expect(sink.selectUnwritten(group, ledger: ledger, grouped: false).skipped == 1)
    }
}

@Suite struct WrittenLedgerTests {
    @Test func rangesMergeAndAnswerMembership() throws {
        let directory = try temporaryDirectory()
        let ledger = WrittenLedger(directory: directory, stage: "out")
        ledger.update("/x", size: 10, offsets: ["S": [1, 2, 3, 7, 8]])
        ledger.update("/x", size: 20, offsets: ["S": [4, 5, 6, 12]])
        #expect((1...8).allSatisfy { ledger.contains(stream: "S", offset: $0, file: "/x") })
        #expect(!ledger.contains(stream: "S", offset: 9, file: "/x"))
        #expect(ledger.contains(stream: "S", offset: 12, file: "/x"))
        #expect(!ledger.contains(stream: "T", offset: 1, file: "/x"))
        try ledger.save()
        let reloaded = WrittenLedger(directory: directory, stage: "out")
        try reloaded.load()
        #expect(reloaded.files["/x"]?.ranges["S"] == [[1, 8], [12, 12]])
        #expect(reloaded.files["/x"]?.size == 20)
    }

    /// One partition's share of a stream: every 4th sequence, a range each.
    /// The acknowledgement floor makes the ledger forget what can never come
    /// again, so its size follows the unacknowledged window, not the history.
    @Test func floorForgetsRangesThatCannotComeAgain() throws {
        let directory = try temporaryDirectory()
        let ledger = WrittenLedger(directory: directory, stage: "out")
        ledger.update("/x", size: 100, offsets: ["S": Array(stride(from: 1, through: 40_000, by: 4))])
        ledger.update("/y", size: 100, offsets: ["T": [5, 9]])
        #expect(ledger.files["/x"]?.ranges["S"]?.count == 10_000)
        ledger.raise(floors: ["S": 39_000])
        #expect(ledger.files["/x"]?.ranges["S"]?.count == 250)
        #expect(ledger.files["/x"]?.ranges["S"]?.first == [39_001, 39_001])
        #expect(ledger.files["/y"]?.ranges["T"] == [[5, 5], [9, 9]])  // other streams keep theirs
        #expect(ledger.contains(stream: "S", offset: 2, file: "/x"))  // below the floor: done for good
        #expect(ledger.contains(stream: "S", offset: 39_005, file: "/x"))
        #expect(!ledger.contains(stream: "S", offset: 39_006, file: "/x"))  // above the floor, not written
        ledger.raise(floors: ["S": 10])  // a lower floor changes nothing
        #expect(!ledger.contains(stream: "S", offset: 39_006, file: "/x"))
        try ledger.save()
        let reloaded = WrittenLedger(directory: directory, stage: "out")
        try reloaded.load()
        #expect(reloaded.floors == ["S": 39_000])
        #expect(reloaded.contains(stream: "S", offset: 7, file: "/x"))
        #expect(!reloaded.contains(stream: "S", offset: 39_002, file: "/x"))
    }

    /// The hand-written JSON reads back with JSONDecoder, odd names included.
    @Test func encodingRoundTripsOddNames() throws {
        let directory = try temporaryDirectory()
        let ledger = WrittenLedger(directory: directory, stage: "out")
        let names = ["/a \"quoted\" \\ path", "/new\nline\t\u{1}", "/ünï/😀.log", "/plain.log"]
        for (index, name) in names.enumerated() {
            ledger.update(name, size: Int64(index), offsets: ["S/\"c\"": [1, 2, 5], "T": [Int64(index)]])
        }
        ledger.raise(floors: ["S/\"c\"": 1])
        let stored = try JSONDecoder().decode(WrittenLedger.Stored.self, from: Data(ledger.encoded().utf8))
        #expect(stored.version == 1)
        #expect(stored.floors == ["S/\"c\"": 1])
        for (index, name) in names.enumerated() {
            #expect(stored.files[name]?.size == Int64(index))
            #expect(
                stored.files[name]?.ranges == ["S/\"c\"": [[2, 2], [5, 5]], "T": [[Int64(index), Int64(index)]]])
        }
    }

    @Test func recoverCutsAnUnacknowledgedTail() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/out.log"
        try "acknowledged\n".write(toFile: file, atomically: true, encoding: .utf8)
        let ledger = WrittenLedger(directory: directory, stage: "out")
        #expect(try ledger.recover(file) == (0, true))  // first sight: records the size
        try "acknowledged\nnot acknow".write(toFile: file, atomically: true, encoding: .utf8)
        let restarted = WrittenLedger(directory: directory, stage: "out")
        restarted.update(file, size: 13, offsets: [:])
        #expect(try restarted.recover(file) == (10, false))
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "acknowledged\n")
    }
}
