import LogPipeBase
import Testing

@Suite struct BackoffTests {
    @Test func doublesUpToTheMaximumAndStartsAgainAfterReset() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .milliseconds(500))
        #expect((0..<5).map { _ in backoff.next() } == [100, 200, 400, 500, 500].map { .milliseconds($0) })
        backoff.reset()
        #expect(backoff.next() == .milliseconds(100))
    }

    /// A first wait above the maximum is the maximum (the reconnect loop
    /// starts at twice `reconnectWait`, which may exceed its cap).
    @Test func aFirstWaitAboveTheMaximumIsTheMaximum() {
        var backoff = Backoff(initial: .seconds(10), maximum: .seconds(2))
        #expect(backoff.next() == .seconds(2))
        #expect(backoff.next() == .seconds(2))
    }

    @Test func jitterSpreadsEachWaitWithinItsRange() {
        var backoff = Backoff(initial: .seconds(1), maximum: .seconds(4), jitter: 0.5...1.5)
        for base in [1.0, 2, 4, 4] {
            let wait = backoff.next().inSeconds
            #expect(wait >= base * 0.5 && wait <= base * 1.5, "\(wait) for \(base)")
        }
    }

    @Test func durationConversions() {
        let duration: Duration = .seconds(3) + .microseconds(1500)
        #expect(duration.inNanoseconds == 3_001_500_000)
        #expect(duration.inMilliseconds == 3001)
        #expect(abs(duration.inSeconds - 3.0015) < 1e-12)
    }
}
