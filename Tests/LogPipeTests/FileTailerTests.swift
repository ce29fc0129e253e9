import Foundation
import Logging
import Synchronization
import Testing

@testable import LogPipe

/// ``FileTailer`` on its own: real files, no pipeline; what it reads goes to
/// a collecting ``TailerOutput`` that acknowledges as the test says.
@Suite struct FileTailerTests {
    /// Collects records; acknowledges the first `acknowledgeFirst` of them
    /// (all when nil) as they are sent.
    final class CollectingOutput: TailerOutput {
        let name = "tail"
        let logger = Logger(label: "test")
        let metrics = StageMetrics()
        let stop = StopSignal()
        let acknowledgeFirst: Int?
        private let records = Mutex<[Record]>([])

        init(acknowledgeFirst: Int? = nil) { self.acknowledgeFirst = acknowledgeFirst }

        var isStopping: Bool { stop.isStopped }
        func waitForStop() async { await stop.wait() }

        func send(_ batch: [Record], delivered: @escaping @Sendable ([Int]) -> Void) async throws {
            let before = records.withLock { records in
                defer { records.append(contentsOf: batch) }
                return records.count
            }
            let limit = acknowledgeFirst ?? Int.max
            delivered(batch.indices.filter { before + $0 < limit })
        }

        var lines: [String] { records.withLock { $0.map(\.text) } }
        var all: [Record] { records.withLock { $0 } }
    }

    func options(_ directory: String, configure: (inout FileTailer.Options) -> Void = { _ in })
        -> FileTailer.Options
    {
        var options = FileTailer.Options(include: [Glob(directory + "/*.log")])
        options.scanInterval = .milliseconds(50)
        options.pollInterval = .milliseconds(50)
        options.checkpointInterval = .milliseconds(50)
        options.rotateWait = .milliseconds(200)
        configure(&options)
        return options
    }

    /// Starts a tailer on a task of its own.
    func start(_ options: FileTailer.Options, _ output: CollectingOutput, state: String) -> Task<Void, any Error> {
        Task.detached {
            try await FileTailer(options: options, output: output, stateDirectory: state, hostname: "box").run()
        }
    }

    func write(_ text: String, to path: String, append: Bool = true) throws {
        if append, let handle = FileHandle(forWritingAtPath: path) {
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(text.utf8))
        } else {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        }
    }

    @Test func onceReadsEveryFileToItsEndAndReturns() async throws {
        let directory = try temporaryDirectory()
        try write("a1\na2\r\n", to: directory + "/a.log", append: false)
        try write("b1\nb2 without newline", to: directory + "/b.log", append: false)
        try write("not matched\n", to: directory + "/c.txt", append: false)
        let output = CollectingOutput()
        try await start(options(directory) { $0.once = true }, output, state: directory + "/state").value
        #expect(output.lines.sorted() == ["a1", "a2\r", "b1", "b2 without newline"])
        let record = try #require(output.all.first { $0.text == "a1" })
        #expect(record.source == "tail" && record.host == "box" && record.origin == directory + "/a.log")
        #expect(output.metrics.counter("partial_lines") == 1)
    }

    /// The checkpoint covers only what was acknowledged: a restart reads
    /// again every line that was sent but not delivered.
    @Test func aRestartReadsAgainWhatWasNotAcknowledged() async throws {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        try write((1...6).map { "line \($0)\n" }.joined(), to: path, append: false)
        let state = directory + "/state"
        let first = CollectingOutput(acknowledgeFirst: 2)
        let run = start(options(directory), first, state: state)
        try await eventually { first.lines.count == 6 }
        // Four lines of 7 bytes are read but not acknowledged: the
        // checkpoint lags 28 bytes behind the file's end.
        try await eventually { first.metrics.namedGauges["checkpoint_lag_bytes"] == 28 }
        first.stop.stop()
        // Four records stay unacknowledged: the tailer waits for them until
        // cancelled (the runtime's shutdown deadline), then saves.
        try await Task.sleep(for: .milliseconds(100))
        run.cancel()
        _ = await run.result

        let second = CollectingOutput()
        try await start(options(directory) { $0.once = true }, second, state: state).value
        #expect(second.lines == ["line 3", "line 4", "line 5", "line 6"])
    }

    @Test func aTruncatedFileIsReadAgainFromItsStart() async throws {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        try write("old 1\nold 2\nold 3\n", to: path, append: false)
        let output = CollectingOutput()
        let run = start(options(directory), output, state: directory + "/state")
        try await eventually { output.lines.count == 3 }
        // copytruncate: emptied in place (same inode), then written again.
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: 0)
        try handle.close()
        try await eventually { output.metrics.counter("truncations") == 1 }
        try write("new 1\n", to: path)
        try await eventually { output.lines.count == 4 }
        output.stop.stop()
        try await run.value
        #expect(output.lines == ["old 1", "old 2", "old 3", "new 1"])
    }

    /// Rotation by rename: the old file is read to its end (lines written
    /// to it after the rename too), the new one from its start.
    @Test func aRotatedFileIsReadToItsEndAndTheNewOneRead() async throws {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        try write("first 1\n", to: path, append: false)
        let output = CollectingOutput()
        let run = start(options(directory), output, state: directory + "/state")
        try await eventually { output.lines.count == 1 }
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seekToEnd()
        #expect(rename(path, directory + "/app.log.1") == 0)
        try handle.write(contentsOf: Data("first 2\n".utf8))  // the writer has not reopened yet
        try handle.close()
        try write("second 1\n", to: path, append: false)
        try await eventually { output.lines.count == 3 }
        output.stop.stop()
        try await run.value
        #expect(output.lines.filter { $0.hasPrefix("first") } == ["first 1", "first 2"])
        #expect(output.lines.contains("second 1"))
    }
}
