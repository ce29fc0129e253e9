/// Waits between attempts that double from `initial` up to `maximum` (an
/// `initial` above `maximum` is `maximum`),
/// optionally spread by a random factor (`jitter`) so that many clients
/// retrying at once do not come back in step.
///
/// The one implementation behind every retry loop of LogPipe and
/// NATSClient: file writes and fsyncs, JetStream API requests and
/// publishes, reconnects.
package struct Backoff: Sendable {
    /// The first wait.
    package let initial: Duration
    /// The longest wait.
    package let maximum: Duration
    /// Each wait is multiplied by a random factor in this range.
    package let jitter: ClosedRange<Double>?
    private var current: Duration

    package init(initial: Duration, maximum: Duration, jitter: ClosedRange<Double>? = nil) {
        self.maximum = max(maximum, .zero)
        self.initial = min(max(initial, .zero), self.maximum)
        self.jitter = jitter
        self.current = self.initial
    }

    /// The wait before the next attempt; the one after is twice as long,
    /// up to ``maximum``.
    package mutating func next() -> Duration {
        let wait = current
        current = min(current * 2, maximum)
        guard let jitter else { return wait }
        return wait * Double.random(in: jitter)
    }

    /// Sleeps for ``next()``.
    package mutating func sleep() async throws {
        try await Task.sleep(for: next())
    }

    /// Starts again at ``initial`` (after a success).
    package mutating func reset() {
        current = initial
    }
}
