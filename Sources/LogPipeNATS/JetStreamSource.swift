import Foundation
import LogPipe
import NATSClient
import NIOCore
import Synchronization

/// Pulls batches from a durable JetStream consumer and acknowledges each
/// message to the server only when every sink is done with its record.
///
/// A message that is not acknowledged (the sink failed, the process died) is
/// delivered again after the consumer's `ack_wait`; its delivery count is
/// kept in the record field `deliveries`. Host and partition are read from
/// the subject with `subject_pattern`.
public struct JetStreamSource: Source, FieldProducer {
    let connection: NATSOptions
    let stream: String
    let consumer: ConsumerConfig
    let createConsumer: Bool
    let batchSize: Int
    let expires: Duration
    let pattern: SubjectPattern?
    let stopAfterIdle: Duration

    static let consumerOptions: [OptionSpec] = [
        OptionSpec("durable", .string, required: true, "Durable consumer name, e.g. `central-p${PARTITION}`."),
        OptionSpec("filter_subject", .string, "Only messages on these subjects, e.g. `logs.p3.>`."),
        OptionSpec("create", .boolean, default: "true", "Create the consumer when missing."),
        OptionSpec("deliver_policy", .choice(["all", "new", "last"]), default: "all", "Where a new consumer starts."),
        OptionSpec(
            "ack_policy", .choice(["explicit", "all"]), default: "explicit",
            "`explicit`: each message is acknowledged; `all`: one ack covers every earlier message (only for a single puller per consumer)."
        ),
        OptionSpec("ack_wait", .duration, default: "30s", "Unacknowledged messages are delivered again after this."),
        OptionSpec(
            "max_ack_pending", .integer(1...1_000_000), default: "10000",
            "Messages delivered but not yet acknowledged, at most."),
        OptionSpec(
            "max_deliver", .integer(-1...Int.max), default: "-1", "Deliveries of one message at most (-1: no limit)."),
    ]

    static let definition = StageDefinition.source(
        "jetstream",
        summary: "Pulls batches from a durable JetStream consumer; acks each message when every sink is done with it.",
        options: NATSStageOptions.specs + [
            OptionSpec("stream", .string, required: true, "Stream name, e.g. `LOGS`."),
            OptionSpec("consumer", .object(consumerOptions), required: true, "The durable pull consumer."),
            OptionSpec("batch", .integer(1...100_000), default: "1000", "Messages per pull request."),
            OptionSpec("expires", .duration, default: "5s", "How long a pull request waits for messages."),
            OptionSpec(
                "subject_pattern", .string, "Reads fields back from the subject, e.g. `logs.p{partition}.{host}`."),
            OptionSpec(
                "stop_after_idle", .duration, default: "0",
                "Finish once no message came for this long (0: never), for back-fills and tests."),
        ]
    ) { options in
        guard let consumerOptions = options.object("consumer"), let durable = consumerOptions.string("durable") else {
            throw options.error(
                "consumer", "needs a durable name",
                hint: "consumer: { durable: central-p3, filter_subject: \"logs.p3.>\" }")
        }
        try NATSStageOptions.checkName(options.string("stream") ?? "", option: "stream", in: options)
        try NATSStageOptions.checkName(durable, option: "durable", in: consumerOptions)
        var consumer = ConsumerConfig(durable: durable, filterSubject: consumerOptions.string("filter_subject"))
        consumer.deliver_policy = consumerOptions.string("deliver_policy") ?? "all"
        consumer.ack_policy = consumerOptions.string("ack_policy") ?? "explicit"
        consumer.ack_wait = JetStreamSink.nanoseconds(consumerOptions.duration("ack_wait"))
        consumer.max_ack_pending = consumerOptions.integer("max_ack_pending")
        consumer.max_deliver = consumerOptions.integer("max_deliver")
        let pattern = try NATSStageOptions.subjectPattern(options)
        return JetStreamSource(
            connection: try NATSStageOptions.make(options), stream: options.string("stream")!, consumer: consumer,
            createConsumer: consumerOptions.boolean("create"), batchSize: options.integer("batch"),
            expires: options.duration("expires"), pattern: pattern, stopAfterIdle: options.duration("stop_after_idle"))
    }

    public var producedFields: Set<String> {
        Set((pattern?.placeholderNames ?? []).filter { !["host", "partition"].contains($0) } + ["deliveries"])
    }

    public func run(_ context: SourceContext) async throws {
        // The central side is often started before the servers or the
        // stream (created by the first shipper): wait for both instead of
        // failing, which under systemd would be a crash loop. What waiting
        // cannot fix (credentials, TLS, a consumer that must not be created)
        // still fails.
        var waiting = Waiting(context: context.stage)
        var connected: (NATSConnection, Task<Void, Never>)?
        while connected == nil {
            do {
                connected = try await NATSStageOptions.connect(self.connection, context: context.stage)
            } catch let error as NATSError {
                guard case .connectionFailed = error else { throw error }
                waiting.still("the NATS server", because: "\(error)")
                try await Waiting.pause { context.isStopping }
                if context.isStopping { return }
            }
        }
        waiting.over("the NATS server")
        let (connection, events) = connected!
        defer { events.cancel() }
        let jetstream = JetStreamContext(connection: connection)
        var ready: ConsumerInfo?
        while ready == nil {
            do {
                ready = try await jetstream.ensureConsumer(stream: stream, consumer, create: createConsumer)
            } catch NATSError.streamNotFound {
                waiting.still(
                    "stream \(stream)", because: "it does not exist yet (the first jetstream sink creates it)")
            } catch NATSError.noResponders, NATSError.timeout, NATSError.disconnected {
                waiting.still(
                    "stream \(stream)", because: "JetStream does not answer (not enabled, or the server restarts)")
            }
            if ready == nil {
                try await Waiting.pause { context.isStopping }
                if context.isStopping {
                    await connection.close()
                    return
                }
            }
        }
        waiting.over("stream \(stream)")
        let info = ready!
        context.logger.info("consumer \(consumer.durable_name) on \(stream): \(info.num_pending) message(s) waiting")
        let inbox = connection.options.inboxPrefix + "." + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let replies = try await connection.subscribe(inbox, capacity: batchSize * 4)
        // Records still in the pipeline after half of ack_wait get a +WPI
        // ("working"), so the server does not deliver them again meanwhile.
        let acker = Acker(
            connection: connection, progressAfter: .nanoseconds(consumer.ack_wait / 2),
            cumulative: info.config.ack_policy == "all")
        let flusher = Task { await acker.run() }
        defer { flusher.cancel() }
        // A pull waits at most `expires` for messages; with stop_after_idle
        // it must not wait longer than that.
        let pullWait = stopAfterIdle > .zero ? min(expires, stopAfterIdle) : expires
        let request = try JSONSerialization.data(
            withJSONObject: ["batch": batchSize, "expires": JetStreamSink.nanoseconds(pullWait)], options: [.sortedKeys]
        )
        let pullSubject = "$JS.API.CONSUMER.MSG.NEXT.\(stream).\(consumer.durable_name)"
        var lastMessage = ContinuousClock.now
        let name = context.name
        // Records are keyed by stream and consumer: two consumers of one
        // stream deliver different messages again.
        let streamID = "\(stream)/\(consumer.durable_name)"
        // The consumer's acknowledgement floor, asked for every 250 ms and
        // passed on with the records (see Record.offsetFloor).
        var ackFloor = info.ack_floor.map { Int64($0.stream_seq) }
        var floorAsked = ContinuousClock.now
        // Records are emitted when the pull is complete, when 1000 are
        // gathered, or after a 10 ms pause in the flow.
        let linger: Duration = .milliseconds(10)

        pulling: while !context.isStopping {
            if ContinuousClock.now - floorAsked >= .milliseconds(250) {
                floorAsked = .now
                if let floor = try? await jetstream.consumerInfo(stream: stream, name: consumer.durable_name)?.ack_floor
                {
                    ackFloor = Int64(floor.stream_seq)
                }
            }
            try await connection.publish(pullSubject, payload: ByteBuffer(bytes: request), replyTo: inbox)
            var received = 0
            // Whether the server said "nothing there" (404/408): only that
            // counts towards stop_after_idle, not a pull lost in an outage.
            var serverSaidEmpty = false
            var records: [Record] = []
            var ackSubjects: [String] = []
            let deadline = ContinuousClock.now + pullWait + .seconds(2)
            collecting: while received < batchSize, !context.isStopping {
                let now = ContinuousClock.now
                if now >= deadline { break collecting }
                let wait = records.isEmpty ? min(deadline - now, .milliseconds(250)) : linger
                guard let message = await replies.next(timeout: wait) else {
                    try await emit(&records, &ackSubjects, acker: acker, context: context)
                    continue collecting
                }
                if let status = message.status {
                    switch status {
                    case 404, 408:  // no messages / request expired
                        serverSaidEmpty = true
                        break collecting
                    case 409:
                        let text = message.headers?.statusDescription ?? ""
                        if text.lowercased().contains("deleted") {
                            throw NATSError.serverError("consumer \(consumer.durable_name) was deleted: \(text)")
                        }
                        break collecting
                    case 100: continue collecting  // heartbeat
                    default: break collecting
                    }
                }
                received += 1
                guard let reply = message.replyTo, let metadata = JetStreamMetadata(ackSubject: reply) else { continue }
                var record = Record(
                    bytes: message.payload, source: name, origin: message.subject, host: "unknown", receivedAt: .now(),
                    subject: message.subject, offset: Int64(metadata.streamSequence), streamID: streamID)
                record.offsetFloor = ackFloor
                pattern?.apply(message.subject, to: &record)
                if metadata.delivered > 1 {
                    record.fields["deliveries"] = String(metadata.delivered)
                    context.metrics.count("redeliveries")
                }
                records.append(record)
                ackSubjects.append(reply)
                if records.count >= 1000 {
                    try await emit(&records, &ackSubjects, acker: acker, context: context)
                }
            }
            try await emit(&records, &ackSubjects, acker: acker, context: context)
            if received > 0 || !serverSaidEmpty {
                lastMessage = .now
            } else if stopAfterIdle > .zero, ContinuousClock.now - lastMessage >= stopAfterIdle {
                break pulling
            }
        }
        replies.unsubscribe()
        // Acknowledge what the sinks finish (the shutdown deadline cancels).
        while acker.outstanding > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        await acker.flush()
        await connection.close()
    }

    private func emit(_ records: inout [Record], _ ackSubjects: inout [String], acker: Acker, context: SourceContext)
        async throws
    {
        guard !records.isEmpty else { return }
        let id = acker.register(ackSubjects)
        let batch = records
        records = []
        ackSubjects = []
        try await context.emit(batch) { _, completed in
            acker.acknowledged(id, completed.map(\.index))
        }
    }
}

/// Sends `+ACK`s in batches (one write for everything finished since the
/// last one), and `+WPI` for messages still in the pipeline after
/// `progressAfter`.
final class Acker: Sendable {
    private struct Pending {
        var subjects: [String]
        var done: [Bool]
        var remaining: Int
        var lastProgress: ContinuousClock.Instant
    }

    private struct State {
        var batches: [UInt64: Pending] = [:]
        var next: UInt64 = 0
        var queue: [String] = []
    }

    private let state = Mutex(State())
    private let connection: NATSConnection
    private let progressAfter: Duration
    /// `ack_policy: all`: one ack covers every earlier message, so only the
    /// last message of the completed prefix is acknowledged.
    private let cumulative: Bool

    init(connection: NATSConnection, progressAfter: Duration, cumulative: Bool = false) {
        self.connection = connection
        self.progressAfter = max(progressAfter, .milliseconds(100))
        self.cumulative = cumulative
    }

    /// Messages emitted whose acknowledgement was not sent yet.
    var outstanding: Int {
        state.withLock { state in state.batches.values.reduce(0) { $0 + $1.remaining } + state.queue.count }
    }

    /// Registers the ack subjects of an emitted batch.
    func register(_ subjects: [String]) -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.batches[state.next] = Pending(
                subjects: subjects, done: Array(repeating: false, count: subjects.count), remaining: subjects.count,
                lastProgress: .now)
            return state.next
        }
    }

    /// Queues the acks of records every sink is done with.
    func acknowledged(_ batch: UInt64, _ indices: [Int]) {
        state.withLock { state in
            guard var pending = state.batches[batch] else { return }
            for index in indices where index < pending.done.count && !pending.done[index] {
                pending.done[index] = true
                pending.remaining -= 1
                if !cumulative { state.queue.append(pending.subjects[index]) }
            }
            if cumulative {
                state.batches[batch] = pending
                // Ack only up to the first message not done yet, oldest batch first.
                var last: String?
                scanning: for id in state.batches.keys.sorted() {
                    guard let entry = state.batches[id] else { continue }
                    for index in entry.done.indices {
                        guard entry.done[index] else { break scanning }
                        last = entry.subjects[index]
                    }
                    state.batches[id] = nil
                }
                if let last { state.queue = [last] }
            } else {
                state.batches[batch] = pending.remaining == 0 ? nil : pending
            }
        }
    }

    func run() async {
        var lastProgressCheck = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))
            await flush()
            if ContinuousClock.now - lastProgressCheck >= progressAfter / 4 {
                lastProgressCheck = .now
                await sendProgress()
            }
        }
    }

    func flush() async {
        let subjects = state.withLock { state in
            defer { state.queue.removeAll(keepingCapacity: true) }
            return state.queue
        }
        await send(subjects, ByteBuffer(staticString: "+ACK"))
    }

    /// `+WPI` for messages in the pipeline for longer than `progressAfter`.
    func sendProgress() async {
        let now = ContinuousClock.now
        let due: [String] = state.withLock { state in
            var due: [String] = []
            for (id, pending) in state.batches where now - pending.lastProgress >= progressAfter {
                for (index, subject) in pending.subjects.enumerated() where !pending.done[index] { due.append(subject) }
                state.batches[id]?.lastProgress = now
            }
            return due
        }
        await send(due, ByteBuffer(staticString: "+WPI"))
    }

    private func send(_ subjects: [String], _ payload: ByteBuffer) async {
        guard !subjects.isEmpty else { return }
        var buffer = connection.makePublishBuffer(capacity: subjects.count * 96)
        for subject in subjects {
            try? buffer.append(subject: subject, payload: payload, subjectIsValid: true)
        }
        do {
            try await connection.publish(buffer)
        } catch {
            // Not acknowledged: the server delivers them again after ack_wait.
        }
    }
}
