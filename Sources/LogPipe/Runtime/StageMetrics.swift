import Synchronization

/// Counters of one stage, updated without locks on the hot path.
public final class StageMetrics: Sendable {
    /// Records received from upstream (transforms and sinks).
    public let recordsIn = Atomic<Int>(0)
    /// Records sent downstream (sources and transforms).
    public let recordsOut = Atomic<Int>(0)
    /// Records a sink acknowledged as delivered.
    public let recordsDelivered = Atomic<Int>(0)
    /// Bytes of the lines received from upstream (transforms and sinks).
    public let bytesIn = Atomic<Int>(0)
    /// Bytes of the lines sent downstream (sources and transforms).
    public let bytesOut = Atomic<Int>(0)
    private let counters = Mutex<[String: Int]>([:])
    private let waitingState = Mutex<String?>(nil)

    public init() {}

    /// Adds `amount` to the named event counter (for example `oversize_lines`).
    public func count(_ name: String, by amount: Int = 1) {
        counters.withLock { $0[name, default: 0] += amount }
    }

    /// The current value of the named event counter.
    public func counter(_ name: String) -> Int {
        counters.withLock { $0[name] ?? 0 }
    }

    /// What the stage is waiting for before it can work (a server, a
    /// stream), or `nil` when it is ready. Shown in the status line.
    public var waitingFor: String? {
        get { waitingState.withLock { $0 } }
        set { waitingState.withLock { $0 = newValue } }
    }

    /// All named event counters.
    public var namedCounters: [String: Int] { counters.withLock { $0 } }

    private let gauges = Mutex<[String: Double]>([:])

    /// Sets the named gauge (a level that goes up and down, for example
    /// `checkpoint_lag_bytes`); exported as `logpipe_<name>{stage=...}`.
    public func setGauge(_ name: String, to value: Double) {
        gauges.withLock { $0[name] = value }
    }

    private let observed = Mutex<[String: @Sendable () -> Double?]>([:])

    /// Makes the named gauge read `provider` whenever metrics are sampled
    /// (about once a second, and only when something reads them): for
    /// levels a stage can look up cheaply but would otherwise have to
    /// publish on every change (acks pending, a round-trip time). A nil
    /// value leaves the gauge out.
    public func observe(_ name: String, _ provider: @escaping @Sendable () -> Double?) {
        observed.withLock { $0[name] = provider }
    }

    /// All named gauges, observed ones included.
    public var namedGauges: [String: Double] {
        var values = gauges.withLock { $0 }
        for (name, provider) in observed.withLock({ $0 }) {
            if let value = provider() { values[name] = value }
        }
        return values
    }

    /// Forgets the gauges and what the stage waited for: a reload replaced
    /// the stage, and the new instance publishes its own.
    func resetForNewInstance() {
        gauges.withLock { $0 = [:] }
        observed.withLock { $0 = [:] }
        waitingFor = nil
    }
}
