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

/// The checkpoint saver of an idle tailer sleeps until a batch is read,
/// instead of waking every `checkpoint_interval` to find nothing changed.
@Suite struct CheckpointQuietTests {
    @Test func quietOnlyWhenTheSaveCoversEverythingRead() async {
        let book = CheckpointBook()
        let tracker = OffsetTracker(committed: 0)
        book.track(FileFingerprint(value: 1), path: "/a.log", length: 10, tracker: tracker)
        // Nothing read: the save covers everything.
        #expect(book.endQuietCheck(book.startQuietCheck(), saved: true))
        // A failed save is never quiet: the saver tries again.
        #expect(!book.endQuietCheck(book.startQuietCheck(), saved: false))

        // A batch read and not yet acknowledged: not quiet.
        let sequence = tracker.register(ends: [10, 20])
        book.touched()
        #expect(!book.endQuietCheck(book.startQuietCheck(), saved: true))
        // Acknowledged after the check began: that save may have missed
        // the new offset, so not quiet yet; the next one is.
        let quiet = book.startQuietCheck()
        tracker.complete(sequence, indices: [0, 1])
        #expect(!book.endQuietCheck(quiet, saved: true))
        #expect(book.endQuietCheck(book.startQuietCheck(), saved: true))
        #expect(tracker.committed == 20)

        // A batch read while saving: not quiet.
        let before = book.startQuietCheck()
        _ = tracker.register(ends: [30])
        book.touched()
        #expect(!book.endQuietCheck(before, saved: true))
    }

    @Test(.timeLimit(.minutes(1))) func theSaverWakesAtTheNextBatch() async {
        let book = CheckpointBook()
        _ = book.startQuietCheck()
        let woke = Task { await book.untilTouched(orAfter: .seconds(3600)) }
        try? await Task.sleep(for: .milliseconds(50))
        book.touched()
        await woke.value  // would take an hour without the touch
        // A touch before the wait ends it at once; cancelling ends it too.
        await book.untilTouched(orAfter: .seconds(3600))
        _ = book.startQuietCheck()
        let cancelled = Task { await book.untilTouched(orAfter: .seconds(3600)) }
        cancelled.cancel()
        await cancelled.value
    }
}

/// Through a real tailer: once idle, the saver sleeps, and the next line
/// read wakes it, so its offset is saved within a checkpoint interval (not
/// at the hourly refresh).
@Suite struct IdleCheckpointTests {
    @Test func aLineAfterAnIdleSpellIsCheckpointed() async throws {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        var options = FileTailer.Options(include: [Glob(path)])
        options.checkpointInterval = .milliseconds(100)
        var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: directory + "/data"))
        let collected = LockedBox<[String]>([])
        try pipeline.add("app", source: FileTailSource(options: options))
        try pipeline.add("out", sink: CollectingSink(collected: collected, onBatch: { _ in }), inputs: ["app"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }
        let checkpoint = directory + "/data/app/checkpoints.json"
        func saved() -> String { (try? String(contentsOfFile: checkpoint, encoding: .utf8)) ?? "" }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.write(contentsOf: Data("one\n".utf8))
        try await eventually { saved().contains("\"offset\":4") }
        // Idle for many intervals: the saver has gone to sleep.
        try await Task.sleep(for: .milliseconds(1000))
        try handle.write(contentsOf: Data("two\n".utf8))
        try handle.close()
        try await eventually { saved().contains("\"offset\":8") }
        #expect(saved().contains("\"offset\":8"), "\(saved())")
        #expect(collected.withLock { $0 } == ["one", "two"])
        runner.stop()
        _ = try await run.value
    }
}
