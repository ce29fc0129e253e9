import NIOCore

/// Turns acknowledgements of records of one file, which may arrive in any
/// order, into the highest offset below which everything is acknowledged:
/// the offset a checkpoint may store.
final class OffsetTracker: Sendable {
    private struct Pending {
        var ends: [Int64]
        var done: [Bool]
        var prefix = 0
    }

    private struct State {
        var committed: Int64
        var pending = CircularBuffer<Pending>()
        var firstSequence = 0
        var nextSequence = 0
    }

    private let state: LockedBox<State>

    init(committed: Int64) {
        state = LockedBox(State(committed: committed))
    }

    /// The offset below which every emitted record is acknowledged.
    var committed: Int64 { state.withLock { $0.committed } }

    /// Whether some emitted records are not acknowledged yet.
    var hasPending: Bool { state.withLock { !$0.pending.isEmpty } }

    /// Registers a batch whose record `i` ends at `ends[i]` (the offset just
    /// past its line); returns the batch's sequence number for ``complete(_:indices:)``.
    func register(ends: [Int64]) -> Int {
        state.withLock { state in
            state.pending.append(Pending(ends: ends, done: Array(repeating: false, count: ends.count)))
            defer { state.nextSequence += 1 }
            return state.nextSequence
        }
    }

    /// Marks records of batch `sequence` acknowledged and advances the
    /// committed offset over the acknowledged prefix.
    func complete(_ sequence: Int, indices: [Int]) {
        state.withLock { state in
            let position = sequence - state.firstSequence
            guard position >= 0, position < state.pending.count else { return }
            let index = state.pending.index(state.pending.startIndex, offsetBy: position)
            for record in indices where record < state.pending[index].done.count {
                state.pending[index].done[record] = true
            }
            while var front = state.pending.first {
                while front.prefix < front.done.count, front.done[front.prefix] { front.prefix += 1 }
                if front.prefix > 0 { state.committed = max(state.committed, front.ends[front.prefix - 1]) }
                if front.prefix == front.done.count {
                    state.pending.removeFirst()
                    state.firstSequence += 1
                } else {
                    state.pending[state.pending.startIndex] = front
                    break
                }
            }
        }
    }
}
