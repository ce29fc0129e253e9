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
        let count = 400
        let batches = try await Self.batches(lines: count, microsecondsApart: 1000) { $0.linger = .milliseconds(20) }
        #expect(batches < count / 4, "\(batches) batches for \(count) lines")
    }

    /// Tails one file while a writer appends `count` lines, one write()
    /// each, `microsecondsApart`; checks that every line came, in order, and
    /// returns in how many batches.
    static func batches(
        lines count: Int, microsecondsApart gap: UInt32, configure: (inout FileTailer.Options) -> Void = { _ in }
    ) async throws -> Int {
        let directory = try temporaryDirectory()
        let path = directory + "/app.log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        var options = FileTailer.Options(include: [Glob(path)])
        configure(&options)
        var pipeline = Pipeline(settings: PipelineSettings(dataDirectory: directory + "/data"))
        let collected = LockedBox<[String]>([])
        let batches = Counter()
        try pipeline.add("app", source: FileSource(options: options))
        try pipeline.add(
            "out", sink: CollectingSink(collected: collected, onBatch: { _ in batches.add(1) }), inputs: ["app"])
        let runner = PipelineRunner(pipeline: pipeline)
        let run = Task { try await runner.run() }
        try await Task.detached {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            for index in 0..<count {
                try handle.write(contentsOf: Data("line \(index)\n".utf8))
                usleep(gap)
            }
        }.value
        try await eventually { collected.withLock { $0.count } == count }
        #expect(collected.withLock { $0 } == (0..<count).map { "line \($0)" })
        runner.stop()
        _ = try await run.value
        return batches.current
    }
}

/// The pause between read rounds follows the rate lines come at.
@Suite struct ReadPacerTests {
    /// A pacer that saw one second of lines at `rate`, read in rounds 10 ms
    /// apart.
    func pacer(rate: Int, linger: Duration = .milliseconds(5), slowLinger: Duration = .milliseconds(25)) -> ReadPacer {
        var pacer = ReadPacer(linger: linger, slowLinger: slowLinger)
        let start = ContinuousClock.now
        var carried = 0.0
        for round in 0...100 {
            carried += Double(rate) / 100
            let lines = Int(carried)
            carried -= Double(lines)
            pacer.read(lines: round == 0 ? 0 : lines, at: start + .milliseconds(10 * round))
        }
        return pacer
    }

    @Test func thePauseGathersAFewLinesBetweenLingerAndSlowLinger() {
        let short = Duration.microseconds(100)
        #expect(pacer(rate: 10_000).pause(afterWaiting: short) == .milliseconds(5))
        #expect(pacer(rate: 2_000).pause(afterWaiting: short) == .milliseconds(5))
        #expect(pacer(rate: 1_000).pause(afterWaiting: short) == .milliseconds(10))
        #expect(pacer(rate: 500).pause(afterWaiting: short) == .milliseconds(20))
        #expect(pacer(rate: 200).pause(afterWaiting: short) == .milliseconds(25))
        #expect(pacer(rate: 100).pause(afterWaiting: short) == .milliseconds(25))
        // 25 ms would gather 1.25 lines: not worth the latency.
        #expect(pacer(rate: 50).pause(afterWaiting: short) == .zero)
        #expect(pacer(rate: 0).pause(afterWaiting: short) == .zero)
    }

    @Test func aWriterThatFellQuietIsReadAtOnce() {
        // The last wait took longer than the pause would: no pause.
        #expect(pacer(rate: 100).pause(afterWaiting: .milliseconds(30)) == .zero)
        #expect(pacer(rate: 10_000).pause(afterWaiting: .milliseconds(6)) == .zero)
        #expect(pacer(rate: 1_000).pause(afterWaiting: .milliseconds(11)) == .zero)
        // A line after a quiet spell updates the rate: read at once.
        var quiet = pacer(rate: 1_000)
        quiet.read(lines: 1, at: ContinuousClock.now + .seconds(5))
        #expect(quiet.pause(afterWaiting: .microseconds(100)) == .zero)
    }

    @Test func zeroSwitchesThePausesOff() {
        let short = Duration.microseconds(100)
        // linger 0: every write is read at once.
        #expect(pacer(rate: 10_000, linger: .zero).pause(afterWaiting: short) == .zero)
        #expect(pacer(rate: 100, linger: .zero).pause(afterWaiting: short) == .zero)
        // slow_linger 0: only `linger`, when it gathers enough.
        #expect(pacer(rate: 1_000, slowLinger: .zero).pause(afterWaiting: short) == .milliseconds(5))
        #expect(pacer(rate: 100, slowLinger: .zero).pause(afterWaiting: short) == .zero)
    }

    /// A busy writer is recognised within its first 50 lines, not after a
    /// whole window.
    @Test func aBurstIsRecognisedWithinFiftyLines() {
        var pacer = ReadPacer(linger: .milliseconds(5), slowLinger: .milliseconds(25))
        let start = ContinuousClock.now
        pacer.read(lines: 0, at: start)
        pacer.read(lines: 60, at: start + .milliseconds(12))
        #expect(pacer.pause(afterWaiting: .microseconds(100)) == .milliseconds(5))
    }
}

/// Through a real tailer: a writer of 100 lines a second, one write()
/// each, is read a few lines per round (it was a round per line).
@Suite struct SlowWriterTests {
    @Test func aHundredLinesASecondShareBatches() async throws {
        let count = 200
        let batches = try await FileTailLingerTests.batches(lines: count, microsecondsApart: 10_000)
        // About 2.5 lines per batch once the rate is known (after a quarter
        // of a second); a batch per line without the pacer.
        #expect(batches < count * 2 / 3, "\(batches) batches for \(count) lines")
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
        try pipeline.add("app", source: FileSource(options: options))
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
