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

    /// A rendered file name over 255 bytes is shortened the same way every
    /// time (a hash keeps different names apart), whole characters kept;
    /// the record is written instead of retried forever.
    @Test func overlongFileNamesAreShortenedStably() async throws {
        let long = String(repeating: "é", count: 200)  // 400 bytes
        let fitted = FileSink.fitted("/out/" + long + ".log")
        let name = try #require(fitted.split(separator: "/").last)
        #expect(name.utf8.count <= 255)
        #expect(name.hasPrefix(String(repeating: "é", count: 119)))
        #expect(fitted == FileSink.fitted("/out/" + long + ".log"))
        #expect(fitted != FileSink.fitted("/out/" + long + ".txt"))
        #expect(FileSink.fitted("/out/short.log") == "/out/short.log")

        let directory = try temporaryDirectory()
        let hosts = [String(repeating: "h", count: 300), "web-01"]
        var pipeline = Pipeline()
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        try pipeline.add("app", source: AsyncSequenceSource(lines: lines))
        struct SetHost: BatchTransform {
            var producedFields: Set<String> { [] }
            let hosts: [String]
            func transform(_ batch: inout Batch) throws {
                for index in batch.records.indices {
                    batch.records[index].host = batch.records[index].text == "one" ? hosts[0] : hosts[1]
                }
            }
        }
        try pipeline.add("hosts", transform: SetHost(hosts: hosts), inputs: ["app"])
        try pipeline.add(
            "files", sink: FileSink(options: FileSink.Options(path: try Template(directory + "/{host}.log"))),
            inputs: ["hosts"])
        continuation.yield("one")
        continuation.yield("two")
        continuation.finish()
        #expect(try await PipelineRunner(pipeline: pipeline).run().isClean)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files.count == 2)
        #expect(files.contains("web-01.log"))
        #expect(files.allSatisfy { $0.utf8.count <= 255 })
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
        let start = ContinuousClock.now
        continuation.yield("one")
        // Written at once, acknowledged only after the next interval's sync,
        // even though no further input arrives. (A machine so busy that the
        // file showed only after most of an interval cannot tell the two
        // apart: the first check needs the write seen early.)
        try await eventually { (try? String(contentsOfFile: directory + "/all.log", encoding: .utf8)) == "one\n" }
        if ContinuousClock.now - start < .seconds(1) { #expect(acknowledged.current == 0) }
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
        // A record skipped after others: those before it are kept (the
        // fresh records are copied only from the first skip on).
        let later = sink.selectUnwritten(
            [record(5, host: "a"), record(6, host: "b"), record(1, host: "a"), record(7, host: "b")], ledger: ledger,
            grouped: false)
        #expect(later.fresh.map(\.offset) == [5, 6, 7])
        #expect(later.paths == [directory + "/a.log", directory + "/b.log", directory + "/b.log"])
        #expect(later.skipped == 1)
        // Nothing skipped: every record, in order.
        let none = sink.selectUnwritten([record(8, host: "a"), record(9, host: "b")], ledger: ledger, grouped: true)
        #expect(none.fresh.map(\.offset) == [8, 9])
        #expect(none.skipped == 0)
    }

    /// Paths rendered once per host are the paths rendered for each record:
    /// escaped, shortened, right after the memo forgot (more hosts than it
    /// keeps), and not memoized by host when the path names more.
    @Test func pathMemoRendersWhatTheTemplateRenders() throws {
        let long = String(repeating: "h", count: 300)
        let hosts =
            ["a", "b/c", "a", long, ".."] + (0..<(FileSink.PathMemo.capacity + 10)).map { "host-\($0)" } + ["a"]
        for text in ["/out/{host}.log", "/out/{host}/{partition}.log", "/out/{%Y}/{host}.log"] {
            let template = try Template(text)
            var memo = FileSink.PathMemo(template: template)
            #expect(memo.byHost == (text == "/out/{host}.log"))
            for (index, host) in hosts.enumerated() {
                var record = record(Int64(index), host: host)
                record.partition = index % 3
                let expected = FileSink.fitted(template.render(record, escape: FileSink.escapePathValue))
                #expect(memo.path(for: record) == expected, "\(text) \(host)")
            }
        }
        var memo = FileSink.PathMemo(template: try Template("/out/{host}.log"))
        #expect(memo.path(for: record(1, host: "b/c")) == "/out/b_c.log")
        #expect(memo.path(for: record(1, host: long)).count < 270)
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
        let stored = try JSONDecoder().decode(WrittenLedger.Stored.self, from: Data(ledger.encoded()))
        #expect(stored.version == 1)
        #expect(stored.floors == ["S/\"c\"": 1])
        for (index, name) in names.enumerated() {
            #expect(stored.files[name]?.size == Int64(index))
            #expect(
                stored.files[name]?.ranges == ["S/\"c\"": [[2, 2], [5, 5]], "T": [[Int64(index), Int64(index)]]])
        }
        // Numbers of every width.
        ledger.update("/n", size: 9_999_999_999, offsets: ["N": [0, 9, 10, 99, 100, Int64.max - 1, Int64.max]])
        ledger.raise(floors: ["M": 1_234_567_890_123])
        let numbers = try JSONDecoder().decode(WrittenLedger.Stored.self, from: Data(ledger.encoded()))
        #expect(numbers.files["/n"]?.size == 9_999_999_999)
        #expect(numbers.files["/n"]?.ranges["N"] == [[0, 0], [9, 10], [99, 100], [Int64.max - 1, Int64.max]])
        #expect(numbers.floors?["M"] == 1_234_567_890_123)
    }

    /// Saves the intent for appending `text` to `file`, then appends it.
    func appendWithIntent(_ text: String, to file: String, ledger: WrittenLedger) throws {
        let attributes = try? FileManager.default.attributesOfItem(atPath: file)
        let size = Int64((attributes?[.size] as? Int) ?? 0)
        let bytes = Array(text.utf8)
        try ledger.saveIntent([bytes.withUnsafeBytes { WriteIntent.append(path: file, start: size, bytes: $0) }])
        let handle = try #require(FileHandle(forWritingAtPath: file))
        handle.seekToEndOfFile()
        handle.write(Data(bytes))
        try handle.close()
    }

    @Test func recoverCutsOnlyTheTailItsIntentProves() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/out.log"
        try "acknowledged\n".write(toFile: file, atomically: true, encoding: .utf8)
        let ledger = WrittenLedger(directory: directory, stage: "out")
        #expect(try ledger.recover(file) == .init(needsSave: true))  // first sight: records the size
        try ledger.save()
        try appendWithIntent("not acknowledged\n", to: file, ledger: ledger)
        // A crash before the ledger was saved: the intent proves the tail.
        let restarted = WrittenLedger(directory: directory, stage: "out")
        try restarted.load()
        #expect(try restarted.recoverAll() == [file: .init(cut: 17)])
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "acknowledged\n")
    }

    @Test func bytesAppendedBySomeoneElseAreNeverCut() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/out.log"
        try "acknowledged\n".write(toFile: file, atomically: true, encoding: .utf8)
        let ledger = WrittenLedger(directory: directory, stage: "out")
        _ = try ledger.recover(file)
        try ledger.save()
        // The sink's own append was committed (ledger saved), then a line was
        // appended by hand: the intent on disk does not start at the recorded size.
        try appendWithIntent("ours\n", to: file, ledger: ledger)
        ledger.update(file, size: 18, offsets: [:])
        try ledger.save()
        let handle = try #require(FileHandle(forWritingAtPath: file))
        handle.seekToEndOfFile()
        handle.write(Data("by hand\n".utf8))
        try handle.close()
        let restarted = WrittenLedger(directory: directory, stage: "out")
        try restarted.load()
        #expect(throws: WrittenLedger.ForeignBytes.self) { try restarted.recoverAll() }
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "acknowledged\nours\nby hand\n")
        let error = WrittenLedger.ForeignBytes(path: file, recorded: 18, size: 26)
        #expect("\(error)".contains("8 byte(s) after byte 18"))
        #expect("\(error)".contains("truncate -s 18 \(file)"))
        #expect("\(error)".contains("nothing was cut"))
    }

    @Test func anUnprovenOrTamperedTailIsRefused() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/out.log"
        let ledger = WrittenLedger(directory: directory, stage: "out")
        _ = try ledger.recover(file)
        try ledger.save()
        // Our intent, but other bytes of the same length on disk.
        try ledger.saveIntent([
            Array("abc\n".utf8).withUnsafeBytes { WriteIntent.append(path: file, start: 0, bytes: $0) }
        ])
        try "xyz\n".write(toFile: file, atomically: true, encoding: .utf8)
        let restarted = WrittenLedger(directory: directory, stage: "out")
        try restarted.load()
        #expect(throws: WrittenLedger.ForeignBytes.self) { try restarted.recoverAll() }
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "xyz\n")
        // A torn intent file proves nothing either.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: restarted.intentPath))
        try "abc\n".write(toFile: file, atomically: true, encoding: .utf8)
        let again = WrittenLedger(directory: directory, stage: "out")
        try again.load()
        #expect(throws: WrittenLedger.ForeignBytes.self) { try again.recoverAll() }
    }

    /// A write interrupted by kill -9 or a power loss stops at a page
    /// boundary: a prefix of our append ending there is ours to cut; one
    /// ending elsewhere is not provably ours.
    @Test func aTornAppendIsCutAtPageBoundariesOnly() throws {
        let directory = try temporaryDirectory()
        let file = directory + "/out.log"
        try String(repeating: "a", count: 99).appending("\n").write(toFile: file, atomically: true, encoding: .utf8)
        let ledger = WrittenLedger(directory: directory, stage: "out")
        _ = try ledger.recover(file)
        try ledger.save()
        let append = (0..<200).map { String(format: "line %05d of the unacknowledged batch\n", $0) }.joined()
        let bytes = Array(append.utf8)  // 7,800 bytes: from 100 across 4096 to 7900
        try ledger.saveIntent([bytes.withUnsafeBytes { WriteIntent.append(path: file, start: 100, bytes: $0) }])
        let handle = try #require(FileHandle(forWritingAtPath: file))
        handle.seekToEndOfFile()
        handle.write(Data(bytes[0..<(4096 - 100)]))  // torn at the page boundary
        try handle.close()
        let restarted = WrittenLedger(directory: directory, stage: "out")
        try restarted.load()
        #expect(try restarted.recoverAll() == [file: .init(cut: 3996)])
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)).count == 100)

        let other = try #require(FileHandle(forWritingAtPath: file))
        other.seekToEndOfFile()
        other.write(Data(bytes[0..<1000]))  // not at a page boundary
        try other.close()
        let third = WrittenLedger(directory: directory, stage: "out")
        try third.load()
        #expect(throws: WrittenLedger.ForeignBytes.self) { try third.recoverAll() }
    }

    @Test func intentEncodingRoundTripsAndRejectsTornCopies() {
        let intent = WriteIntent(appends: [
            .init(path: "/a/b.log", start: 5, length: 9000, blockHashes: [1, 2, 3]),
            .init(path: "/a/ü c.log", start: 0, length: 0, blockHashes: []),
        ])
        let bytes = intent.encoded()
        #expect(WriteIntent(decoding: bytes) == intent)
        for cut in [0, 1, 8, bytes.count / 2, bytes.count - 1] {
            #expect(WriteIntent(decoding: Array(bytes.prefix(cut))) == nil)
        }
        var flipped = bytes
        flipped[10] ^= 0x01
        #expect(WriteIntent(decoding: flipped) == nil)
    }
}
