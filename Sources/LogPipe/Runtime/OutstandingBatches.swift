import NIOCore
import Synchronization

/// The batches one source emitted that are not fully acknowledged yet,
/// oldest first: how many records are outstanding, and since when the
/// oldest waits. Updated once per batch emitted and once per
/// acknowledgement callback, never per record.
final class OutstandingBatches: Sendable {
    private struct Entry {
        var emitted: ContinuousClock.Instant
        var remaining: Int
    }

    private struct State {
        var entries = CircularBuffer<Entry>()
        /// The id of `entries.first`.
        var firstID: UInt64 = 0
        var records = 0
    }

    private let state = Mutex(State())

    /// A batch of `count` records was emitted at `now`: returns its id.
    func emitted(_ count: Int, at now: ContinuousClock.Instant = .now) -> UInt64 {
        state.withLock { state in
            state.entries.append(Entry(emitted: now, remaining: count))
            state.records += count
            return state.firstID + UInt64(state.entries.count - 1)
        }
    }

    /// `count` records of batch `id` were acknowledged: returns how long the
    /// batch took when this completed it.
    func acknowledged(_ id: UInt64, count: Int, at now: ContinuousClock.Instant = .now) -> Duration? {
        state.withLock { state in
            guard id >= state.firstID, id - state.firstID < UInt64(state.entries.count) else { return nil }
            let index = state.entries.index(state.entries.startIndex, offsetBy: Int(id - state.firstID))
            let taken = min(count, state.entries[index].remaining)
            state.entries[index].remaining -= taken
            state.records -= taken
            let completed = state.entries[index].remaining == 0 ? now - state.entries[index].emitted : nil
            while let first = state.entries.first, first.remaining == 0 {
                state.entries.removeFirst()
                state.firstID += 1
            }
            return completed
        }
    }

    /// Records not acknowledged yet, and when the oldest of them was emitted.
    var snapshot: (records: Int, oldest: ContinuousClock.Instant?) {
        state.withLock { ($0.records, $0.entries.first?.emitted) }
    }
}
