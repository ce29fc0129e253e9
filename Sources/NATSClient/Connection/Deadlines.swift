import Dispatch
import LogPipeBase
import Synchronization

/// Time-outs without a task and a timer each.
///
/// Waiting with a time-out the plain way (a task group racing the wait
/// against `Task.sleep`) costs two child tasks and a timer armed and
/// disarmed in the kernel per wait. A JetStream sink waits so for every
/// batch, and at a few lines per batch (a host logging 1,000 lines a second)
/// that was a large part of its CPU. Here a time-out is an entry in a table;
/// one dispatch timer is armed for the earliest entry only, and time-outs
/// scheduled later than it (the common case: the same time-out, again and
/// again) arm nothing. Entries fire up to ``slack`` late.
final class Deadlines: Sendable {
    /// The process-wide table.
    static let shared = Deadlines()

    /// How late an entry may fire: entries due within it fire together.
    static let slack: Duration = .milliseconds(20)

    private struct Entry {
        var deadline: ContinuousClock.Instant
        var action: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
        /// When the armed timer fires, if one is armed.
        var armed: ContinuousClock.Instant?
    }

    private let state = Mutex(State())

    /// Runs `action` after `delay`, unless cancelled first. Returns the
    /// entry's id for ``cancel(_:)``.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> UInt64 {
        let deadline = ContinuousClock.now + delay
        let (id, arm): (UInt64, ContinuousClock.Instant?) = state.withLock { state in
            state.nextID += 1
            state.entries[state.nextID] = Entry(deadline: deadline, action: action)
            if let armed = state.armed, armed <= deadline + Self.slack { return (state.nextID, nil) }
            state.armed = deadline
            return (state.nextID, deadline)
        }
        if let arm { self.arm(at: arm) }
        return id
    }

    /// Forgets the entry (a no-op when it fired already).
    func cancel(_ id: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    private func arm(at deadline: ContinuousClock.Instant) {
        let delay = max(deadline - .now, .zero)
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(delay.inNanoseconds))) {
            self.fire(armedFor: deadline)
        }
    }

    private func fire(armedFor deadline: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        let (due, next): ([Entry], ContinuousClock.Instant?) = state.withLock { state in
            var due: [Entry] = []
            var earliest: ContinuousClock.Instant?
            for (id, entry) in state.entries {
                if entry.deadline <= now + Self.slack {
                    due.append(entry)
                    state.entries[id] = nil
                } else if earliest.map({ entry.deadline < $0 }) ?? true {
                    earliest = entry.deadline
                }
            }
            // Another timer armed since (for an earlier entry) stays in
            // charge; this one re-arms only if it was the armed one.
            guard state.armed == deadline else { return (due, nil) }
            state.armed = earliest
            return (due, earliest)
        }
        if let next { arm(at: next) }
        // Entries that came due together (a timer that ran late on a busy
        // machine) fire in the order of their deadlines.
        for entry in due.sorted(by: { $0.deadline < $1.deadline }) { entry.action() }
    }
}
