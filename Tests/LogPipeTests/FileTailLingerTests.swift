import Foundation
import Synchronization
import Testing

@testable import LogPipe

/// The file source reads a busy writer's lines many per wake-up.
@Suite struct FileTailLingerTests {
    /// 400 lines, one write() each, about a millisecond apart (an
    /// application logging 1,000 lines a second): with `linger` the source
    /// reads them in far fewer batches than lines; read at once, each line
    /// was a batch of its own (and a round of poll, fstat and pread). A busy
    /// machine only makes batches larger.
    @Test func linesWrittenFasterThanLingerApartShareBatches() async throws {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        var options = FileTailer.Options(include: [Glob(path)])
        options.linger = .milliseconds(20)
        var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: directory + "/data"))
        let collected = LockedBox<[String]>([])
        let batches = Counter()
        try pipeline.add("app", source: FileTailSource(options: options))
        try pipeline.add(
            "out", sink: CollectingSink(collected: collected, onBatch: { _ in batches.add(1) }), inputs: ["app"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }
        let count = 400
        try await Task.detached {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            for index in 0..<count {
                try handle.write(contentsOf: Data("line \(index)\n".utf8))
                usleep(1000)
            }
        }.value
        try await eventually { collected.withLock { $0.count } == count }
        #expect(collected.withLock { $0 } == (0..<count).map { "line \($0)" })
        #expect(batches.current < count / 4, "\(batches.current) batches for \(count) lines")
        runner.stop()
        _ = try await run.value
    }
}
