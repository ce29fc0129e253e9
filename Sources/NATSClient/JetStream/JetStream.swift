import Foundation
import LogPipeBase
import NIOCore
import Synchronization

/// An error the JetStream API returned: `{"error":{"code":…,"err_code":…,"description":"…"}}`.
public struct JetStreamAPIError: Error, CustomStringConvertible, Sendable, Decodable {
    /// HTTP-like status code.
    public var code: Int
    /// JetStream's own error code (10059: stream not found, 10014: consumer not found, …).
    public var err_code: Int?
    /// What the server said.
    public var description: String
}

/// A stream's configuration (the fields LogPipe sets; the server fills in the rest).
public struct StreamConfig: Codable, Sendable, Equatable {
    public var name: String
    public var subjects: [String]
    public var retention: String = "limits"
    public var storage: String = "file"
    /// Nanoseconds; 0 = unlimited.
    public var max_age: Int64 = 0
    public var max_bytes: Int64 = -1
    public var max_msgs: Int64 = -1
    /// Nanoseconds.
    public var duplicate_window: Int64 = 120_000_000_000
    public var num_replicas: Int = 1
    public var discard: String = "old"

    /// A stream named `name` on `subjects`, with the defaults above.
    public init(name: String, subjects: [String]) {
        self.name = name
        self.subjects = subjects
    }

    /// The settings that differ from `other`, as `name: ours vs theirs`.
    /// The settings that differ from `other`, as `name: ours (pipeline) vs
    /// theirs (server)`; with `compared`, only those settings are looked at
    /// (the ones a pipeline states: the others are defaults for creating).
    public func differences(from other: StreamConfig, compared: Set<String>? = nil) -> [String] {
        var differences: [String] = []
        func compare<T: Equatable>(_ name: String, _ ours: T, _ theirs: T) {
            guard compared?.contains(name) ?? true else { return }
            if ours != theirs { differences.append("\(name): \(ours) (pipeline) vs \(theirs) (server)") }
        }
        compare("subjects", subjects.sorted(), other.subjects.sorted())
        compare("retention", retention, other.retention)
        compare("storage", storage, other.storage)
        compare("max_age", max_age, other.max_age)
        compare("max_bytes", max_bytes, other.max_bytes)
        compare("max_msgs", max_msgs, other.max_msgs)
        compare("duplicate_window", duplicate_window, other.duplicate_window)
        compare("num_replicas", num_replicas, other.num_replicas)
        compare("discard", discard, other.discard)
        return differences
    }
}

/// What the server reports about a stream.
public struct StreamInfo: Decodable, Sendable {
    public struct State: Decodable, Sendable {
        public var messages: Int64
        public var bytes: Int64
        public var first_seq: UInt64
        public var last_seq: UInt64
    }
    public var config: StreamConfig
    public var state: State
}

/// A durable consumer's configuration.
public struct ConsumerConfig: Codable, Sendable, Equatable {
    public var durable_name: String
    public var deliver_policy: String = "all"
    public var ack_policy: String = "explicit"
    /// Nanoseconds.
    public var ack_wait: Int64 = 30_000_000_000
    public var max_deliver: Int = -1
    public var filter_subject: String?
    public var max_ack_pending: Int = 10_000
    public var replay_policy: String = "instant"
    /// With `deliver_policy: by_start_sequence`: the first stream sequence
    /// delivered.
    public var opt_start_seq: UInt64?
    /// The most messages one pull request may ask for (unset: no limit).
    public var max_batch: Int?
    /// The most pull requests the server holds at once; more are refused
    /// with a 409 (unset: the server's default, 512).
    public var max_waiting: Int?

    /// A durable pull consumer named `durable`.
    public init(durable: String, filterSubject: String?) {
        durable_name = durable
        filter_subject = filterSubject
    }
}

/// What the server reports about a consumer.
public struct ConsumerInfo: Decodable, Sendable {
    public var stream_name: String
    public var name: String
    public var config: ConsumerConfig
    public var num_pending: UInt64
    public var num_ack_pending: Int
    /// Pull requests the server holds open for this consumer.
    public var num_waiting: Int?
    /// Every message up to this point is acknowledged: it will not be
    /// delivered again.
    public var ack_floor: SequencePair?
    /// The last message delivered (consumer and stream sequence).
    public var delivered: SequencePair?

    /// A consumer and a stream sequence.
    public struct SequencePair: Decodable, Sendable {
        public var consumer_seq: UInt64
        public var stream_seq: UInt64
    }
}

/// The server's answer to a JetStream publish.
public struct PubAck: Decodable, Sendable {
    public var stream: String?
    public var seq: UInt64?
    public var duplicate: Bool?
    public var error: JetStreamAPIError?
}

/// JetStream's management API over a connection (request/reply, JSON).
public struct JetStreamContext: Sendable {
    public let connection: NATSConnection
    /// Time allowed for each API request.
    public var timeout: Duration

    public init(connection: NATSConnection, timeout: Duration = .seconds(5)) {
        self.connection = connection
        self.timeout = timeout
    }

    private struct ErrorEnvelope: Decodable {
        var error: JetStreamAPIError?
    }

    /// Sends an API request; a time-out, a missing responder or a 503 (a
    /// cluster electing a leader, a node restarting) is retried with backoff
    /// for up to six times the timeout before it counts.
    func request<Response: Decodable>(_ subject: String, body: some Encodable, as type: Response.Type) async throws
        -> Response
    {
        let deadline = ContinuousClock.now + timeout * 6
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        while true {
            do {
                return try await requestOnce(subject, body: body, as: type)
            } catch let error where Self.isTransient(error) && ContinuousClock.now < deadline {
                try await backoff.sleep()
                try? await connection.waitUntilConnected()
            }
        }
    }

    static func isTransient(_ error: any Error) -> Bool {
        switch error {
        case NATSError.timeout, NATSError.disconnected: return true
        case NATSError.serverError(let message): return message.contains("no responders")
        case let error as JetStreamAPIError: return error.code == 503 || error.code == 408
        default: return false
        }
    }

    private func requestOnce<Response: Decodable>(_ subject: String, body: some Encodable, as: Response.Type)
        async throws -> Response
    {
        let payload = try JSONEncoder().encode(body)
        let reply: NATSMessage
        do {
            reply = try await connection.request(
                "$JS.API." + subject, payload: ByteBuffer(bytes: payload), timeout: timeout)
        } catch NATSError.noResponders {
            throw NATSError.serverError(
                "JetStream is not enabled on the server (no responders for $JS.API); start nats-server with -js")
        }
        let data = Data(reply.payload.readableBytesView)
        if let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: data), let error = envelope.error {
            throw error
        }
        return try JSONDecoder().decode(Response.self, from: data)
    }

    private struct Empty: Encodable {}

    /// The stream's info, or `nil` when there is no such stream.
    public func streamInfo(_ name: String) async throws -> StreamInfo? {
        do {
            return try await request("STREAM.INFO.\(name)", body: Empty(), as: StreamInfo.self)
        } catch let error as JetStreamAPIError where error.err_code == 10059 || error.code == 404 {
            return nil
        }
    }

    /// Creates the stream, or checks that the existing one has the same
    /// settings (updating it only with `update: true`).
    ///
    /// - Throws: an error listing every setting that differs.
    @discardableResult
    public func ensureStream(
        _ config: StreamConfig, create: Bool = true, update: Bool = false, compared: Set<String>? = nil
    ) async throws -> StreamInfo {
        if let existing = try await streamInfo(config.name) {
            let differences = config.differences(from: existing.config, compared: compared)
            if differences.isEmpty { return existing }
            if update {
                return try await request("STREAM.UPDATE.\(config.name)", body: config, as: StreamInfo.self)
            }
            throw NATSError.serverError(
                "stream \(config.name) exists with other settings (\(differences.joined(separator: "; "))); change the pipeline file, or set stream.update: true to change the stream"
            )
        }
        guard create else { throw NATSError.streamNotFound(stream: config.name) }
        return try await request("STREAM.CREATE.\(config.name)", body: config, as: StreamInfo.self)
    }

    /// The consumer's info, or `nil` when there is none.
    public func consumerInfo(stream: String, name: String) async throws -> ConsumerInfo? {
        do {
            return try await request("CONSUMER.INFO.\(stream).\(name)", body: Empty(), as: ConsumerInfo.self)
        } catch let error as JetStreamAPIError where error.err_code == 10014 || error.code == 404 {
            return nil
        }
    }

    private struct CreateConsumer: Encodable {
        var stream_name: String
        var config: ConsumerConfig
    }

    /// Creates a durable consumer, or returns the existing one.
    @discardableResult
    public func ensureConsumer(stream: String, _ config: ConsumerConfig, create: Bool = true) async throws
        -> ConsumerInfo
    {
        if let existing = try await consumerInfo(stream: stream, name: config.durable_name) {
            return existing
        }
        guard create else {
            throw NATSError.serverError(
                "consumer \(config.durable_name) does not exist on stream \(stream); create it or set consumer.create: true"
            )
        }
        do {
            return try await request(
                "CONSUMER.DURABLE.CREATE.\(stream).\(config.durable_name)",
                body: CreateConsumer(stream_name: stream, config: config), as: ConsumerInfo.self)
        } catch let error as JetStreamAPIError where error.err_code == 10059 {
            throw NATSError.streamNotFound(stream: stream)
        }
    }

    /// Deletes a consumer (its acknowledgement state with it).
    public func deleteConsumer(stream: String, name: String) async throws {
        struct Deleted: Decodable { var success: Bool }
        do {
            _ = try await request("CONSUMER.DELETE.\(stream).\(name)", body: Empty(), as: Deleted.self)
        } catch let error as JetStreamAPIError where error.err_code == 10014 {
            // Already gone.
        }
    }

    /// Deletes all messages of a stream.
    public func purgeStream(_ name: String) async throws {
        struct Purged: Decodable { var success: Bool }
        _ = try await request("STREAM.PURGE.\(name)", body: Empty(), as: Purged.self)
    }
}

/// Metadata of a message delivered by a JetStream consumer, from its ack subject.
public struct JetStreamMetadata: Sendable, Equatable {
    public var stream: String
    public var consumer: String
    /// How many times the message was delivered (1 the first time).
    public var delivered: Int
    public var streamSequence: UInt64
    public var consumerSequence: UInt64
    public var pending: UInt64

    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
    /// and the newer form with domain and account hash
    /// (`$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]`).
    public init?(ackSubject: String) {
        // On the bytes, once per delivered message: splitting into
        // Substrings and parsing them took an eighth of a consumer's CPU.
        var subject = ackSubject
        let parsed: (String, String, Int, UInt64, UInt64, UInt64)? = subject.withUTF8 { bytes in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: 13) { dots in
                var count = 0
                for index in bytes.indices where bytes[index] == UInt8(ascii: ".") {
                    guard count < 12 else { return nil }
                    dots[count] = index
                    count += 1
                }
                // Token i spans (i == 0 ? 0 : dots[i-1] + 1) ..< (i == count ? bytes.count : dots[i]).
                let tokens = count + 1
                func range(_ token: Int) -> Range<Int> {
                    (token == 0 ? 0 : dots[token - 1] + 1)..<(token == count ? bytes.count : dots[token])
                }
                func number(_ token: Int) -> UInt64? {
                    decimal(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[range(token)])))
                }
                func text(_ token: Int) -> String {
                    String(decoding: UnsafeBufferPointer(rebasing: bytes[range(token)]), as: UTF8.self)
                }
                guard tokens >= 9, bytes[range(0)].elementsEqual("$JS".utf8), bytes[range(1)].elementsEqual("ACK".utf8)
                else { return nil }
                let base: Int
                switch tokens {
                case 9: base = 2
                case 11, 12: base = 4
                default: return nil
                }
                guard let delivered = number(base + 2), delivered <= UInt64(Int.max),
                    let streamSequence = number(base + 3), let consumerSequence = number(base + 4),
                    let pending = number(base + 6)
                else { return nil }
                return (text(base), text(base + 1), Int(delivered), streamSequence, consumerSequence, pending)
            }
        }
        guard let parsed else { return nil }
        (stream, consumer, delivered, streamSequence, consumerSequence, pending) = parsed
    }
}

/// Subject matching as the server does it.
public enum NATSSubject {
    /// Whether `subject` (no wildcards) is matched by `pattern`: tokens are
    /// separated by `.`; `*` matches one token, `>` as the last token
    /// matches one or more.
    public static func matches(pattern: String, subject: String) -> Bool {
        let patternTokens = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        let subjectTokens = subject.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for (index, token) in patternTokens.enumerated() {
            if token.elementsEqual(">".utf8) { return subjectTokens.count > index }
            guard index < subjectTokens.count else { return false }
            if token.elementsEqual("*".utf8) { continue }
            if !token.elementsEqual(subjectTokens[index]) { return false }
        }
        return patternTokens.count == subjectTokens.count
    }
}
