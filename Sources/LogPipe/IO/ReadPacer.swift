import LogPipeBase

/// Chooses how long the file source waits, after reading every file to its
/// end, before it reads again: the rate lines come at decides.
///
/// Each read round costs about the same (a poll, an fstat and a pread per
/// file, a batch through the pipeline), however few lines it finds. Read at
/// once, a writer of 100 lines a second costs 100 rounds a second. The
/// pacer measures the rate over windows of ``window`` (or of 50 lines, at
/// least 10 ms long) and waits as long as ``linesPerRound`` lines take to
/// come, but at least `linger` and at most `slowLinger`: 5 ms at 2,000
/// lines/s and above, 10 ms at 1,000, 25 ms at 400 and below (with the
/// defaults). At 10,000 lines/s that is 50 lines per round and at most 5 ms
/// more latency; at 1,000 lines/s 10 ms costs a third less CPU than 5 ms
/// (the reference shipper). A pause that would gather fewer than 1.5 lines
/// (under 60 lines/s) is not taken: each line is read when it comes.
/// `linger` 0 reads every write at once; `slowLinger` 0 (or below `linger`)
/// keeps the pause at `linger`.
///
/// A writer that falls quiet is caught at once: no pause follows a wait for
/// a change that took longer than the pause would have.
struct ReadPacer {
    let linger: Duration
    let slowLinger: Duration
    /// How long lines are counted before the rate is updated.
    static let window: Duration = .milliseconds(250)
    /// The lines a pause is meant to gather.
    static let linesPerRound = 10

    private var windowStart: ContinuousClock.Instant?
    private var windowLines = 0
    /// Lines per second over the last complete window.
    private(set) var rate: Double = 0

    init(linger: Duration, slowLinger: Duration) {
        self.linger = linger
        self.slowLinger = slowLinger
    }

    /// Counts the lines a round read, at `now`.
    mutating func read(lines: Int, at now: ContinuousClock.Instant) {
        guard let start = windowStart else {
            windowStart = now
            windowLines = lines
            return
        }
        windowLines += lines
        let elapsed = now - start
        // A busy writer is recognised within its first 50 lines.
        if elapsed >= Self.window || (windowLines >= 50 && elapsed >= .milliseconds(10)) {
            rate = Double(windowLines) / elapsed.inSeconds
            windowStart = now
            windowLines = 0
        }
    }

    /// The pause before the next round, after a round that read every file
    /// to its end; `lastWait` is how long the wait for a change before that
    /// round took.
    func pause(afterWaiting lastWait: Duration) -> Duration {
        guard linger > .zero, rate > 0 else { return .zero }
        let longest = max(linger, slowLinger)
        let gather = Duration.nanoseconds(Int64(min(Double(Self.linesPerRound) / rate, 3600) * 1e9))
        let pause = min(max(gather, linger), longest)
        guard rate * pause.inSeconds >= 1.5, lastWait < pause else { return .zero }
        return pause
    }
}
