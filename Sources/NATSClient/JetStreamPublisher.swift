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

/// Publishes to JetStream with many acknowledgements in flight on one muxed
/// reply subscription. Each publish gets a promise of its ``JetStreamPublishResult``.
public final class JetStreamPublisher: Sendable {
    public let connection: NATSConnection
    private let prefix: String
    private let subscription: NATSSubscription
    private final class Pending: Sendable {
        let state = Mutex<(next: UInt64, waiting: [UInt64: AsyncPromise<JetStreamPublishResult>])>((0, [:]))
        func withLock<R>(_ body: (inout (next: UInt64, waiting: [UInt64: AsyncPromise<JetStreamPublishResult>])) -> R)
            -> R
        {
            state.withLock { body(&$0) }
        }
    }

    private let pending = Pending()
    private let reader: Task<Void, Never>

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
        let subscription = try await connection.subscribe(prefix + ".*", capacity: 1 << 20)
        self.subscription = subscription
        let pending = self.pending
        reader = Task {
            for await reply in subscription {
                guard let token = reply.subject.split(separator: ".").last.flatMap({ UInt64($0) }) else { continue }
                guard let promise = pending.withLock({ $0.waiting.removeValue(forKey: token) }) else { continue }
                promise.succeed(Self.result(of: reply))
            }
        }
    }

    deinit {
        reader.cancel()
        subscription.unsubscribe()
    }

    static func result(of reply: NATSMessage) -> JetStreamPublishResult {
        if reply.status == 503 { return .noResponders }
        guard let ack = try? JSONDecoder().decode(PubAck.self, from: Data(reply.payload.readableBytesView)) else {
            return .rejected(
                JetStreamAPIError(code: 500, err_code: nil, description: "unreadable publish acknowledgement"))
        }
        if let error = ack.error { return .rejected(error) }
        return .stored(sequence: ack.seq ?? 0, duplicate: ack.duplicate ?? false)
    }

    /// Publishes `messages` with one write; returns a promise per message, in order.
    public func publish(_ messages: [Message]) async throws -> [AsyncPromise<JetStreamPublishResult>] {
        var buffer = connection.makePublishBuffer(capacity: messages.reduce(0) { $0 + $1.payload.readableBytes + 96 })
        let (first, promises): (UInt64, [AsyncPromise<JetStreamPublishResult>]) = pending.withLock { state in
            let first = state.next
            var promises: [AsyncPromise<JetStreamPublishResult>] = []
            promises.reserveCapacity(messages.count)
            for offset in 0..<UInt64(messages.count) {
                let promise = AsyncPromise<JetStreamPublishResult>()
                state.waiting[first + offset] = promise
                promises.append(promise)
            }
            state.next += UInt64(messages.count)
            return (first, promises)
        }
        do {
            for (offset, message) in messages.enumerated() {
                var headers: NATSHeaders?
                if let id = message.messageID {
                    headers = NATSHeaders()
                    headers!.append("Nats-Msg-Id", id)
                }
                try buffer.append(
                    subject: message.subject, payload: message.payload, headers: headers,
                    replyTo: prefix + "." + String(first + UInt64(offset)))
            }
            try await connection.publish(buffer)
        } catch {
            forget(first..<(first + UInt64(messages.count)))
            throw error
        }
        return promises
    }

    /// Drops the promises of tokens whose replies no longer matter.
    func forget(_ tokens: Range<UInt64>) {
        pending.withLock { state in
            for token in tokens { state.waiting.removeValue(forKey: token) }
        }
    }

    /// Publishes awaiting replies.
    public var inFlight: Int { pending.withLock { $0.waiting.count } }
}
