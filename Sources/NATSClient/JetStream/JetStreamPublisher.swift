import Foundation
import NIOCore
import Synchronization

/// How the server answered one JetStream publish.
public enum JetStreamPublishResult: Sendable {
    /// Stored at `sequence` (or recognised as a duplicate of a stored message).
    case stored(sequence: UInt64, duplicate: Bool)
    /// No stream listens on the subject (503): retry later.
    case noResponders
    /// The server refused the message (too large, wrong expected sequence, …).
    case rejected(JetStreamAPIError)
}

/// The acknowledgements of one published batch, filled in as replies arrive.
public final class PublishTracker: Sendable {
    private struct State {
        var results: [JetStreamPublishResult?]
        var remaining: Int
        var publishedAt: ContinuousClock.Instant
    }

    private let state: Mutex<State>
    private let done = AsyncPromise<Void>()
    /// The batch number in reply subjects.
    let batch: UInt64
    /// When the connection took the batch (a wait for room in its write
    /// buffer does not count): acknowledgement deadlines count from here
    /// (see ``wait(until:)``).
    public var publishedAt: ContinuousClock.Instant { state.withLock { $0.publishedAt } }

    init(count: Int, batch: UInt64) {
        self.batch = batch
        state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count, publishedAt: .now))
        if count == 0 { done.succeed(()) }
    }

    /// Sets ``publishedAt`` to now.
    func published() {
        state.withLock { $0.publishedAt = .now }
    }

    /// Records a reply; returns whether it was the first for `index`.
    @discardableResult
    func resolve(_ index: Int, _ result: JetStreamPublishResult) -> Bool {
        let (first, finished): (Bool, Bool) = state.withLock { state in
            guard index < state.results.count, state.results[index] == nil else { return (false, false) }
            state.results[index] = result
            state.remaining -= 1
            return (true, state.remaining == 0)
        }
        if finished { done.succeed(()) }
        return first
    }

    /// Replies still missing.
    var remaining: Int { state.withLock { $0.remaining } }

    /// Waits until every reply arrived or `timeout` passed.
    public func wait(timeout: Duration) async {
        _ = try? await done.value(timeout: timeout, onTimeout: NATSError.timeout("publish acknowledgements"))
    }

    /// Waits until every reply arrived or `deadline` passed; returns at once
    /// when it has. With many batches in flight, each waited for in turn,
    /// a deadline counted from ``publishedAt`` makes them all time out
    /// together: a timeout counted from the wait would add up, batch after
    /// batch, while the stream was gone.
    public func wait(until deadline: ContinuousClock.Instant) async {
        let left = deadline - .now
        guard left > .zero else { return }
        await wait(timeout: left)
    }

    /// The replies so far, in publish order (`nil`: none yet).
    public var results: [JetStreamPublishResult?] { state.withLock { $0.results } }
}

/// Publishes to JetStream with many acknowledgements in flight on one muxed
/// reply subscription (`<inbox>.<batch>.<index>`); a ``PublishTracker`` per
/// batch collects the replies.
public final class JetStreamPublisher: Sendable {
    public let connection: NATSConnection
    private let prefix: String
    private let subscription: NATSSubscription
    private let trackers = Trackers()

    private final class Trackers: Sendable {
        struct State {
            var next: UInt64 = 0
            var byBatch: [UInt64: PublishTracker] = [:]
            /// Messages published whose reply has not arrived (or was given up).
            var outstanding = 0
            var roomWaiters: [(limit: Int, promise: AsyncPromise<Void>)] = []
        }
        let state = Mutex(State())

        /// Wakes the publishers waiting for room.
        func released(_ count: Int) {
            let ready: [AsyncPromise<Void>] = state.withLock { state in
                state.outstanding -= count
                // Called once per acknowledgement: nothing allocated unless a waiter is ready.
                guard state.roomWaiters.contains(where: { state.outstanding < $0.limit }) else { return [] }
                let outstanding = state.outstanding
                var ready: [AsyncPromise<Void>] = []
                state.roomWaiters.removeAll { waiter in
                    guard outstanding < waiter.limit else { return false }
                    ready.append(waiter.promise)
                    return true
                }
                return ready
            }
            for promise in ready { promise.succeed(()) }
        }
    }

    /// One message to publish.
    public struct Message: Sendable {
        public var subject: String
        public var payload: ByteBuffer
        /// `Nats-Msg-Id`: the stream drops a second message with the same id
        /// inside its duplicate window.
        public var messageID: String?

        public init(subject: String, payload: ByteBuffer, messageID: String?) {
            self.subject = subject
            self.payload = payload
            self.messageID = messageID
        }
    }

    /// Subscribes to a reply inbox on `connection`.
    public init(connection: NATSConnection) async throws {
        self.connection = connection
        let random = (0..<22).map { _ in
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".randomElement()!
        }
        prefix = connection.options.inboxPrefix + "." + String(random)
        // Replies are matched on the event loop as they are decoded: no
        // task switch per acknowledgement.
        let trackers = self.trackers
        subscription = try await connection.subscribe(prefix + ".>") { reply in
            guard let (batch, index) = Self.tokens(reply.subject) else { return }
            let tracker = trackers.state.withLock { $0.byBatch[batch] }
            if tracker?.resolve(index, Self.result(of: reply)) == true { trackers.released(1) }
        }
    }

    deinit {
        subscription.unsubscribe()
    }

    /// The last two tokens of `<inbox>.<batch>.<index>`, read without splitting.
    static func tokens(_ subject: String) -> (UInt64, Int)? {
        var index: UInt64 = 0
        var batch: UInt64 = 0
        var multiplier: UInt64 = 1
        var field = 0
        for byte in subject.utf8.reversed() {
            if byte == UInt8(ascii: ".") {
                field += 1
                multiplier = 1
                if field == 2 { return (batch, Int(index)) }
                continue
            }
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            if field == 0 {
                index += UInt64(byte - 0x30) * multiplier
            } else {
                batch += UInt64(byte - 0x30) * multiplier
            }
            multiplier *= 10
        }
        return nil
    }

    /// Reads a PubAck. The common `{"stream":"LOGS","seq":42}` is scanned
    /// by hand; errors and anything unusual go through JSONDecoder.
    static func result(of reply: NATSMessage) -> JetStreamPublishResult {
        if reply.status == 503 { return .noResponders }
        let fast: JetStreamPublishResult? = reply.payload.withUnsafeReadableBytes { bytes in
            let body = bytes.bindMemory(to: UInt8.self)
            guard let seqKey = find(#""seq":"#, in: body), find(#""error""#, in: body) == nil else { return nil }
            var sequence: UInt64 = 0
            var position = seqKey
            while position < body.count, body[position] == 0x20 { position += 1 }  // the server writes `"seq": 42`
            var digits = 0
            while position < body.count, body[position] >= 0x30, body[position] <= 0x39 {
                sequence = sequence * 10 + UInt64(body[position] - 0x30)
                position += 1
                digits += 1
            }
            guard digits > 0 else { return nil }
            var duplicate = false
            if var flag = find(#""duplicate":"#, in: body) {
                while flag < body.count, body[flag] == 0x20 { flag += 1 }
                duplicate = flag < body.count && body[flag] == UInt8(ascii: "t")
            }
            return .stored(sequence: sequence, duplicate: duplicate)
        }
        if let fast { return fast }
        guard let ack = try? JSONDecoder().decode(PubAck.self, from: Data(reply.payload.readableBytesView)) else {
            return .rejected(
                JetStreamAPIError(code: 500, err_code: nil, description: "unreadable publish acknowledgement"))
        }
        if let error = ack.error { return .rejected(error) }
        return .stored(sequence: ack.seq ?? 0, duplicate: ack.duplicate ?? false)
    }

    /// The position just after `needle` in `haystack`.
    static func find(_ needle: StaticString, in haystack: UnsafeBufferPointer<UInt8>) -> Int? {
        let length = needle.utf8CodeUnitCount
        guard haystack.count >= length else { return nil }
        return needle.withUTF8Buffer { pattern -> Int? in
            var start = 0
            while start + length <= haystack.count {
                if haystack[start] == pattern[0], (1..<length).allSatisfy({ haystack[start + $0] == pattern[$0] }) {
                    return start + length
                }
                start += 1
            }
            return nil
        }
    }

    /// Publishes `messages` with one write; the tracker collects their replies.
    public func publish(_ messages: [Message]) async throws -> PublishTracker {
        let tracker: PublishTracker = trackers.state.withLock { state in
            defer { state.next += 1 }
            let tracker = PublishTracker(count: messages.count, batch: state.next)
            state.byBatch[state.next] = tracker
            state.outstanding += messages.count
            return tracker
        }
        let batch = tracker.batch
        let batchPrefix = prefix + "." + String(batch) + "."
        do {
            // Messages are read in place (iterating copies each: three retains).
            let buffer = try messages.withUnsafeBufferPointer { messages in
                var size = 0
                for index in messages.indices { size += messages[index].payload.readableBytes + 96 }
                var buffer = connection.makePublishBuffer(capacity: size)
                for index in messages.indices {
                    try buffer.appendJetStream(
                        subject: messages[index].subject, payload: messages[index].payload,
                        messageID: messages[index].messageID, replyPrefix: batchPrefix, replyIndex: index)
                }
                return buffer
            }
            try await connection.publish(buffer)
            tracker.published()
        } catch {
            forget(tracker)
            throw error
        }
        return tracker
    }

    /// Stops routing replies to `tracker` (its batch is settled); replies it
    /// still lacks no longer count as outstanding.
    public func forget(_ tracker: PublishTracker) {
        let removed = trackers.state.withLock { $0.byBatch.removeValue(forKey: tracker.batch) != nil }
        if removed {
            let missing = tracker.remaining
            if missing > 0 { trackers.released(missing) }
        }
    }

    /// Waits until fewer than `limit` messages await their reply.
    public func waitForRoom(limit: Int) async {
        let waiter: AsyncPromise<Void>? = trackers.state.withLock { state in
            guard state.outstanding >= limit else { return nil }
            let promise = AsyncPromise<Void>()
            state.roomWaiters.append((limit, promise))
            return promise
        }
        _ = try? await waiter?.value()
    }

    /// Messages published and not answered yet (the acks the server owes).
    public var pendingAcks: Int { trackers.state.withLock { $0.outstanding } }

    /// Batches whose replies are still routed.
    public var inFlightBatches: Int { trackers.state.withLock { $0.byBatch.count } }
}
