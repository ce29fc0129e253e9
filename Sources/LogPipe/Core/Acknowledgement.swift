import Synchronization

/// How a record's journey through the pipeline ended.
///
/// When a record reaches several sinks (fan-out), the record's final status is
/// the most significant one among its branches: `failed` over `delivered` over
/// `dropped`.
public enum DeliveryStatus: UInt8, Sendable, Hashable, Comparable, CustomStringConvertible {
    /// A filter removed the record on purpose. It counts as done.
    case dropped = 0
    /// A sink finished with it (written, flushed, acknowledged by a server).
    case delivered = 1
    /// A sink gave up on it under a policy the user chose (for example a
    /// message the server refuses). Sources may treat it as done or keep it.
    case failed = 2

    public static func < (lhs: DeliveryStatus, rhs: DeliveryStatus) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .dropped: "dropped"
        case .delivered: "delivered"
        case .failed: "failed"
        }
    }
}

/// One record of a batch that every downstream branch is done with.
public struct CompletedRecord: Sendable, Hashable {
    /// The record's position in the batch its source emitted.
    public var index: Int
    /// How the record ended (see ``DeliveryStatus``).
    public var status: DeliveryStatus
}

/// Tracks, for one batch a source emitted, when every sink is done with each record.
///
/// The runtime creates a token for every batch a source emits and stamps each
/// record with it. Downstream, a record is *held* once per branch it travels
/// (fan-out adds holds); a sink that finishes with a record, or a filter that
/// drops it, releases one hold. When a record's last hold is released the
/// token reports it, exactly once, to the handler the source gave.
///
/// Handlers run on the releasing task (usually a sink's); keep them short and
/// non-blocking, for example record the indices and signal the source.
public final class AcknowledgementToken: Sendable {
    /// Called with records whose last hold was just released.
    public typealias Handler = @Sendable (_ token: AcknowledgementToken, _ completed: [CompletedRecord]) -> Void

    private struct State: ~Copyable {
        var holds: [UInt32]
        var statuses: [DeliveryStatus]
        var remaining: Int
    }

    /// The number of records the batch had when its source emitted it.
    public let count: Int
    private let state: Mutex<State>
    private let handler: Handler?

    /// Creates a token for `count` records, each held once.
    public init(count: Int, handler: Handler?) {
        self.count = count
        self.handler = handler
        self.state = Mutex(
            State(
                holds: Array(repeating: 1, count: count),
                statuses: Array(repeating: .dropped, count: count),
                remaining: count
            )
        )
    }

    /// Whether every record of the batch is done.
    public var isComplete: Bool { state.withLock { $0.remaining == 0 } }

    /// The number of records not yet done.
    public var pendingCount: Int { state.withLock { $0.remaining } }

    /// Adds `extra` holds to each record in `ranges` (used by fan-out).
    func retain(runs ranges: some Sequence<Range<Int>>, extra: UInt32) {
        state.withLock { state in
            for indices in ranges {
                for index in indices where state.holds[index] > 0 {
                    state.holds[index] += extra
                }
            }
        }
    }

    /// Adds `extra` holds to each record in `indices`.
    func retain(_ indices: Range<Int>, extra: UInt32) {
        retain(runs: CollectionOfOne(indices), extra: extra)
    }

    /// Releases one hold of each record in `ranges` with `status`, under one
    /// lock; the handler hears of the records this completed in one call.
    func release(runs ranges: some Collection<Range<Int>>, status: DeliveryStatus) {
        var completed: [CompletedRecord] = []
        // One allocation per call (per batch), none per record.
        completed.reserveCapacity(ranges.reduce(0) { $0 + $1.count })
        state.withLock { state in
            for indices in ranges {
                for index in indices {
                    let holds = state.holds[index]
                    // A record already complete cannot complete twice; a stray
                    // extra release is ignored instead of corrupting the count.
                    guard holds > 0 else { continue }
                    if status > state.statuses[index] { state.statuses[index] = status }
                    state.holds[index] = holds - 1
                    if holds == 1 {
                        state.remaining -= 1
                        completed.append(CompletedRecord(index: index, status: state.statuses[index]))
                    }
                }
            }
        }
        if !completed.isEmpty, let handler {
            handler(self, completed)
        }
    }

    /// Releases one hold of each record in `indices` with `status`.
    func release(_ indices: Range<Int>, status: DeliveryStatus) {
        release(runs: CollectionOfOne(indices), status: status)
    }
}

/// A record's link to the token of the batch its source emitted.
@usableFromInline
struct AcknowledgementSlot: Sendable {
    @usableFromInline let token: AcknowledgementToken
    @usableFromInline let index: Int
}

/// Folds acknowledgement slots into maximal runs of consecutive slots and
/// hands over all runs of one token at once, so a batch costs one lock and
/// one call per token however its records were thinned out by filters.
struct AcknowledgementRuns {
    private var token: AcknowledgementToken?
    /// Finished runs of `token` (the current one is `start..<end`).
    private var ranges: [Range<Int>] = []
    private var start = 0
    private var end = 0

    @inline(__always)
    mutating func add(_ slot: AcknowledgementSlot?, _ body: (AcknowledgementToken, [Range<Int>]) -> Void) {
        guard let slot else { return }
        if let token, token === slot.token {
            if slot.index == end {
                end += 1
                return
            }
            ranges.append(start..<end)
        } else {
            finish(body)
            token = slot.token
        }
        start = slot.index
        end = slot.index + 1
    }

    /// Hands over the runs collected so far.
    mutating func finish(_ body: (AcknowledgementToken, [Range<Int>]) -> Void) {
        guard let token else { return }
        ranges.append(start..<end)
        body(token, ranges)
        ranges.removeAll(keepingCapacity: true)
        self.token = nil
    }
}

extension UnsafeBufferPointer where Element == Record {
    /// Applies `body` to each token with the runs of consecutive slots its
    /// records hold. Reads the slots in place: no record is copied (a copy
    /// of a record costs a retain per field).
    func forEachAcknowledgementRun(_ body: (AcknowledgementToken, [Range<Int>]) -> Void) {
        var runs = AcknowledgementRuns()
        for index in indices { runs.add(self[index].acknowledgement, body) }
        runs.finish(body)
    }
}

extension Array where Element == Record {
    /// See `UnsafeBufferPointer.forEachAcknowledgementRun(_:)`.
    func forEachAcknowledgementRun(_ body: (AcknowledgementToken, [Range<Int>]) -> Void) {
        withUnsafeBufferPointer { $0.forEachAcknowledgementRun(body) }
    }
}
