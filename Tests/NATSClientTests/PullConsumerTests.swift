import Foundation
import NATSTestSupport
import NIOCore
import Testing

@testable import NATSClient

/// The pull consumer on its own, against a real nats-server.
@Suite(.serialized) struct PullConsumerTests {
    /// A stream S on `s.>` holding `count` messages alternating between
    /// `s.a` and `s.b` (payload: the message's number), stored before it
    /// returns.
    func filledStream(_ server: NATSServer, count: Int) async throws -> (NATSConnection, JetStreamContext) {
        let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let jetstream = JetStreamContext(connection: connection, timeout: .seconds(30))
        try await jetstream.ensureStream(StreamConfig(name: "S", subjects: ["s.>"]))
        try await publish(connection, jetstream, from: 0, count: count)
        return (connection, jetstream)
    }

    func publish(_ connection: NATSConnection, _ jetstream: JetStreamContext, from: Int, count: Int) async throws {
        let before = try #require(try await jetstream.streamInfo("S")).state.messages
        try await connection.publish(
            (from..<from + count).map {
                .init(subject: $0 % 2 == 0 ? "s.a" : "s.b", payload: ByteBuffer(string: String($0)))
            })
        try await connection.flush()
        // Stored asynchronously: wait until the stream has them all.
        let deadline = ContinuousClock.now + .seconds(300)
        while try #require(try await jetstream.streamInfo("S")).state.messages < before + Int64(count) {
            guard ContinuousClock.now < deadline else {
                Issue.record("the stream did not store \(count) messages within 300 s")
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Fetches until a long poll comes back empty.
    func drain(_ consumer: PullConsumer) async throws -> [JetStreamMessage] {
        var messages: [JetStreamMessage] = []
        while true {
            let fetched = try await consumer.fetch()
            #expect(fetched.gap == nil)
            messages += fetched.messages
            if fetched.empty { return messages }
        }
    }

    /// Filtered: every message of its subject, in stream order, in batches
    /// of at most `batch`, then an empty long poll (408) that ends the drain;
    /// acknowledged in one write, the floor reaches the last message.
    @Test func fetchesEverythingPendingInOrderThenReportsEmpty() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 5001)
        let (consumer, info) = try await PullConsumer.bind(
            jetstream, stream: "S", config: ConsumerConfig(durable: "A", filterSubject: "s.a"),
            options: .init(batch: 400, expires: .milliseconds(500)))
        #expect(info.num_pending == 2501)
        var batches: [Int] = []
        var messages: [JetStreamMessage] = []
        while true {
            let fetched = try await consumer.fetch()
            if fetched.empty { break }
            batches.append(fetched.messages.count)
            messages += fetched.messages
        }
        #expect(batches.allSatisfy { $0 <= 400 })
        #expect(messages.map { String(buffer: $0.payload) } == stride(from: 0, to: 5001, by: 2).map(String.init))
        #expect(messages.map(\.metadata.consumerSequence) == Array(1...2501))
        #expect(messages.allSatisfy { $0.subject == "s.a" && $0.metadata.delivered == 1 })
        try await consumer.acknowledge(messages.map(\.ackSubject))
        try await connection.flush()
        // The server applies acks asynchronously.
        var floor: UInt64 = 0
        let deadline = ContinuousClock.now + .seconds(300)
        while floor < 5001, ContinuousClock.now < deadline {
            floor = try #require(try await consumer.info()).ack_floor?.stream_seq ?? 0
            if floor < 5001 { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(floor == 5001)
        #expect(try #require(try await consumer.info()).num_ack_pending == 0)
        consumer.close()
        await connection.close()
    }

    /// Nothing pending: the fetch waits in a long poll and returns the
    /// messages published meanwhile, not an empty result.
    @Test func longPollReturnsMessagesPublishedWhileWaiting() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 0)
        let (consumer, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: ConsumerConfig(durable: "A", filterSubject: nil),
            options: .init(batch: 100, expires: .seconds(30)))
        let fetching = Task { try await consumer.fetch() }
        try await Task.sleep(for: .milliseconds(300))
        try await publish(connection, jetstream, from: 0, count: 3)
        var fetched = try await fetching.value
        while fetched.messages.count < 3 {
            let more = try await consumer.fetch()
            fetched.messages += more.messages
        }
        #expect(!fetched.empty)
        #expect(fetched.messages.map { String(buffer: $0.payload) } == ["0", "1", "2"])
        consumer.close()
        await connection.close()
    }

    /// A request the server refuses for now (409: more waiting requests
    /// than the consumer's max_waiting) comes back to the caller as
    /// `refused`, not as an error, and not as an endless wait inside the
    /// fetch; once the other request is gone, the messages come.
    @Test func aRefusedRequestReturnsToTheCaller() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 0)
        let (config, holder, holding) = try await jetstream.holdTheOnlyPullSlot(
            stream: "S", consumer: "A", expires: .seconds(3))
        let (consumer, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: config, options: .init(batch: 10, expires: .seconds(30)))
        // The first request is no_wait (nothing known pending): send it
        // after the long poll so that both are refused or answered alike.
        var fetched = try await consumer.fetch()
        while fetched.refused == nil, fetched.messages.isEmpty {
            fetched = try await consumer.fetch()
        }
        #expect(fetched.refused?.hasPrefix("409") == true, "\(fetched.refused ?? "not refused")")
        #expect(fetched.messages.isEmpty)
        _ = try await holding.value  // expires empty
        holder.close()
        try await publish(connection, jetstream, from: 0, count: 2)
        var messages: [String] = []
        while messages.count < 2 {
            messages += try await consumer.fetch().messages.map { String(buffer: $0.payload) }
        }
        #expect(messages == ["0", "1"])
        consumer.close()
        await connection.close()
    }

    /// The server crashes while a long poll is open: the request is gone
    /// with it and nothing says so (no 409, no heartbeat, no expiry), so the
    /// consumer replaces it after two missed heartbeats, and the next
    /// message arrives without waiting out `expires`.
    @Test func requestLostWithTheServerIsReplaced() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 0)
        let (consumer, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: ConsumerConfig(durable: "A", filterSubject: nil),
            options: .init(batch: 100, expires: .seconds(8)))
        let fetching = Task { try await consumer.fetch() }
        // Crash only once the server holds the long poll: a request sent
        // while the server is down goes out after the reconnect and is not
        // lost (a busy machine can take longer than any fixed pause).
        try await jetstream.waitForWaitingRequest(stream: "S", consumer: "A")
        let port = server.port
        server.crash()
        try await server.start(port: port)
        try await connection.waitUntilConnected()
        // JetStream comes back a moment after the server.
        let deadline = ContinuousClock.now + .seconds(300)
        while (try? await jetstream.streamInfo("S")) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await publish(connection, jetstream, from: 0, count: 1)
        // The lost request comes back to the caller as unanswered.
        var fetched = try await fetching.value
        #expect(fetched.refused?.contains("no answer") == true, "\(fetched.refused ?? "answered")")
        while fetched.messages.isEmpty {
            fetched = try await consumer.fetch()
        }
        #expect(fetched.messages.map { String(buffer: $0.payload) } == ["0"])
        #expect(consumer.requestsLost >= 1)
        consumer.close()
        await connection.close()
    }

    /// A previous run left deliveries unacknowledged: with gap detection the
    /// first fetch says so, and restart() starts again at the floor, so the
    /// unacknowledged messages come again first, in stream order.
    @Test func unacknowledgedAtStartIsAGapAndRestartRedeliversInOrder() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 10)
        let options = PullConsumer.Options(batch: 10, expires: .milliseconds(500), detectGaps: true)
        let config = ConsumerConfig(durable: "A", filterSubject: nil)
        let (first, _) = try await PullConsumer.bind(jetstream, stream: "S", config: config, options: options)
        var taken: [JetStreamMessage] = []
        while taken.count < 10 { taken += try await first.fetch().messages }  // a fetch may return part
        try await first.acknowledge(taken.prefix(3).map(\.ackSubject))
        try await connection.flush()
        let deadline = ContinuousClock.now + .seconds(300)
        while try #require(try await first.info()).ack_floor?.stream_seq != 3, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        first.close()
        let (second, info) = try await PullConsumer.bind(jetstream, stream: "S", config: config, options: options)
        #expect(info.num_ack_pending == 7)
        let fetched = try await second.fetch()
        #expect(fetched.messages.isEmpty)
        #expect(fetched.gap?.description.contains("7 message(s) delivered before this run") == true)
        #expect(try await second.restart() == 4)
        let again = try await drain(second)
        #expect(again.map { String(buffer: $0.payload) } == (3..<10).map(String.init))
        #expect(again.map(\.metadata.consumerSequence) == Array(1...7))
        second.close()
        await connection.close()
    }

    /// Deliveries this puller never received (here taken by another puller
    /// of the same consumer, as a broken connection would lose them) are a
    /// gap: the fetch returns only what came before it.
    @Test func skippedConsumerSequenceIsAGap() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 10)
        let config = ConsumerConfig(durable: "A", filterSubject: nil)
        let (watched, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: config,
            options: .init(batch: 20, expires: .milliseconds(500), detectGaps: true))
        let (other, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: config, options: .init(batch: 20, expires: .milliseconds(500)))
        /// Fetches until `count` messages came (a fetch may return part).
        func take(_ count: Int, from consumer: PullConsumer) async throws -> [UInt64] {
            var sequences: [UInt64] = []
            while sequences.count < count {
                let fetched = try await consumer.fetch()
                #expect(fetched.gap == nil)
                sequences += fetched.messages.map(\.metadata.consumerSequence)
            }
            return sequences
        }
        // One no_wait request for up to 20 gets the ten and ends; nothing
        // more pending, so no next request is sent (by either puller).
        #expect(try await take(10, from: watched) == Array(1...10))
        try await publish(connection, jetstream, from: 10, count: 10)
        #expect(try await take(10, from: other) == Array(11...20))
        try await publish(connection, jetstream, from: 20, count: 5)
        let fetched = try await watched.fetch()
        #expect(fetched.messages.isEmpty, "\(fetched)")
        #expect(fetched.gap?.description.contains("consumer sequence 11 to 20") == true)
        // Until restart, the gap stays.
        #expect(try await watched.fetch().gap != nil)
        watched.close()
        other.close()
        await connection.close()
    }

    /// A request over the consumer's limits is refused by the server with a
    /// 409: asking again cannot help, so the fetch fails and says what to
    /// change.
    @Test func requestOverTheConsumersLimitsFails() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let (connection, jetstream) = try await filledStream(server, count: 5)
        var config = ConsumerConfig(durable: "A", filterSubject: nil)
        config.max_batch = 10
        let (consumer, _) = try await PullConsumer.bind(
            jetstream, stream: "S", config: config, options: .init(batch: 100, expires: .seconds(1)))
        do {
            _ = try await consumer.fetch()
            Issue.record("a pull of 100 from a consumer with max_batch 10 did not fail")
        } catch {
            #expect("\(error)".contains("lower the batch"), "\(error)")
        }
        consumer.close()
        await connection.close()
    }
}
