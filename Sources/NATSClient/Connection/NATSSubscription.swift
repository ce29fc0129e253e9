import NIOCore
import Synchronization

/// Messages of one subscription, as an `AsyncSequence`.
///
/// Messages wait in a bounded buffer until the consumer takes them. Core
/// NATS has no flow control towards the server (a server drops a client that
/// falls far behind), so when the buffer is full new messages are dropped and
/// counted in ``droppedCount``; consume promptly, or use JetStream when every
/// message matters.
public final class NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage

    /// The subject (may hold wildcards).
    public let subject: String
    /// The queue group, if any.
    public let queueGroup: String?
    /// The subscription id on the connection.
    public let sid: UInt64
    /// Messages buffered at most.
    public let capacity: Int

    private struct State {
        var buffer = CircularBuffer<NATSMessage>()
        var waiter: CheckedContinuation<NATSMessage?, Never>?
        var finished = false
        var dropped = 0
        /// Identifies the current waiter, so a time-out only ends its own wait.
        var waiterID: UInt64 = 0
        /// The current waiter's time-out entry in ``Deadlines``.
        var timer: UInt64?

        /// Takes the waiter (and cancels its time-out).
        mutating func takeWaiter() -> CheckedContinuation<NATSMessage?, Never>? {
            defer {
                waiter = nil
                if let timer { Deadlines.shared.cancel(timer) }
                timer = nil
            }
            return waiter
        }
    }

    private let state = Mutex(State())
    private let unsubscribeAction: @Sendable (UInt64) -> Void
    /// Called for each message instead of buffering it (see
    /// ``NATSConnection/subscribe(_:queueGroup:handler:)``).
    private let handler: (@Sendable (NATSMessage) -> Void)?

    init(
        subject: String, queueGroup: String?, sid: UInt64, capacity: Int,
        handler: (@Sendable (NATSMessage) -> Void)? = nil,
        unsubscribe: @escaping @Sendable (UInt64) -> Void
    ) {
        self.subject = subject
        self.queueGroup = queueGroup
        self.sid = sid
        self.capacity = Swift.max(1, capacity)
        self.handler = handler
        self.unsubscribeAction = unsubscribe
    }

    /// Messages dropped because the buffer was full.
    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// Messages waiting in the buffer.
    public var bufferedCount: Int { state.withLock { $0.buffer.count } }

    /// Whether the subscription ended and its buffer is empty.
    public var isFinished: Bool { state.withLock { $0.finished && $0.buffer.isEmpty } }

    /// Stops the subscription; the sequence ends after the buffered messages.
    public func unsubscribe() {
        unsubscribeAction(sid)
        finish()
    }

    /// Hands a message to the consumer; returns false if it was dropped.
    @discardableResult
    func deliver(_ message: NATSMessage) -> Bool {
        if let handler {
            handler(message)
            return true
        }
        let (waiter, accepted): (CheckedContinuation<NATSMessage?, Never>?, Bool) = state.withLock { state in
            if state.finished { return (nil, false) }
            if let waiter = state.takeWaiter() { return (waiter, true) }
            guard state.buffer.count < capacity else {
                state.dropped += 1
                return (nil, false)
            }
            state.buffer.append(message)
            return (nil, true)
        }
        waiter?.resume(returning: message)
        return accepted
    }

    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            return state.takeWaiter()
        }
        waiter?.resume(returning: nil)
    }

    /// The next message, waiting for one; `nil` once the subscription ended
    /// (or the waiting task was cancelled before a message came). A message
    /// that arrives as the task is cancelled is still returned: do not
    /// discard the result of a cancelled call.
    public func next() async -> NATSMessage? {
        if let message = state.withLock({ $0.buffer.popFirst() }) { return message }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<NATSMessage?, Never>) in
                let ready: (NATSMessage?, Bool) = state.withLock { state in
                    if let message = state.buffer.popFirst() { return (message, true) }
                    if state.finished || Task.isCancelled { return (nil, true) }
                    state.waiter = continuation
                    return (nil, false)
                }
                if ready.1 { continuation.resume(returning: ready.0) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// The next message, or `nil` when none came within `timeout` (or the
    /// subscription ended). A message is never lost to the time-out.
    public func next(timeout: Duration) async -> NATSMessage? {
        if let message = state.withLock({ $0.buffer.popFirst() }) { return message }
        return await withCheckedContinuation { (continuation: CheckedContinuation<NATSMessage?, Never>) in
            let ready: (NATSMessage?, Bool, UInt64) = state.withLock { state in
                if let message = state.buffer.popFirst() { return (message, true, 0) }
                if state.finished { return (nil, true, 0) }
                state.waiter = continuation
                state.waiterID &+= 1
                return (nil, false, state.waiterID)
            }
            if ready.1 {
                continuation.resume(returning: ready.0)
                return
            }
            let id = ready.2
            // A time-out entry, not a task with a timer per wait (see
            // Deadlines): a pull consumer waits here per burst of messages.
            let entry = Deadlines.shared.schedule(after: timeout) { [self] in
                // Only this wait, and only if still waiting: a delivery that
                // won the race keeps its message.
                let waiter: CheckedContinuation<NATSMessage?, Never>? = state.withLock { state in
                    guard state.waiterID == id, let waiter = state.waiter else { return nil }
                    state.waiter = nil
                    state.timer = nil
                    return waiter
                }
                waiter?.resume(returning: nil)
            }
            // Cancelled by whoever ends the wait first; if that happened
            // already, cancelled here.
            let ended = state.withLock { state in
                guard state.waiterID == id, state.waiter != nil else { return true }
                state.timer = entry
                return false
            }
            if ended { Deadlines.shared.cancel(entry) }
        }
    }

    /// Waits for at least one message and returns up to `max` of those
    /// buffered; `nil` once the subscription ended.
    public func nextBatch(max: Int) async -> [NATSMessage]? {
        guard let first = await next() else { return nil }
        var batch = [first]
        state.withLock { state in
            while batch.count < max, let message = state.buffer.popFirst() { batch.append(message) }
        }
        return batch
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: NATSSubscription
        public mutating func next() async -> NATSMessage? { await subscription.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }
}
