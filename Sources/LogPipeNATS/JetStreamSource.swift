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
    let inOrder: Bool

    struct Settings: NATSStageSettings {
        struct Consumer: StageSettings {
            enum DeliverPolicy: String, CaseIterable, Sendable { case all, new, last }
            enum AckPolicy: String, CaseIterable, Sendable { case explicit, all }
            var durable = ""
            var filterSubject: String?
            var create = true
            var deliverPolicy: DeliverPolicy = .all
            var ackPolicy: AckPolicy = .explicit
            var ackWait: Duration = .seconds(30)
            var maxAckPending = 10000
            var maxDeliver = -1
        }

        var connection = NATSConnectionSettings()
        var stream = ""
        var consumer = Consumer()
        var batch = 1000
        var expires: Duration = .seconds(5)
        var subjectPattern: String?
        var stopAfterIdle: Duration = .zero
        var inOrder = false
    }

    static let consumerOptions: [StageOption<Settings.Consumer>] = [
        .string("durable", \.durable, required: true, "Durable consumer name, e.g. `central-p${PARTITION}`."),
        .string("filter_subject", \.filterSubject, "Only messages on these subjects, e.g. `logs.p3.>`."),
        .boolean("create", \.create, "Create the consumer when missing."),
        .choice("deliver_policy", \.deliverPolicy, "Where a new consumer starts."),
        .choice(
            "ack_policy", \.ackPolicy,
            "`explicit`: each message is acknowledged; `all`: one ack covers every earlier message (needs `in_order: true`; only for a single puller per consumer)."
        ),
        .duration("ack_wait", \.ackWait, "Unacknowledged messages are delivered again after this."),
        .integer(
            "max_ack_pending", \.maxAckPending, in: 1...1_000_000,
            "Messages delivered but not yet acknowledged, at most."),
        .integer("max_deliver", \.maxDeliver, in: -1...Int.max, "Deliveries of one message at most (-1: no limit)."),
    ]

    static let definition = StageDefinition.source(
        "jetstream",
        summary: "Pulls batches from a durable JetStream consumer; acks each message when every sink is done with it.",
        options: NATSStageOptions.options(for: Settings.self) + [
            .string("stream", \.stream, required: true, "Stream name, e.g. `LOGS`."),
            .object("consumer", \.consumer, consumerOptions, required: true, "The durable pull consumer."),
            .integer("batch", \.batch, in: 1...100_000, "Messages per pull request."),
            .duration("expires", \.expires, "How long a pull request waits for messages."),
            .string(
                "subject_pattern", \.subjectPattern,
                "Reads fields back from the subject, e.g. `logs.p{partition}.{host}`."),
            .duration(
                "stop_after_idle", \.stopAfterIdle,
                "Finish once no message came for this long (0: never), for back-fills and tests."),
            .boolean(
                "in_order", \.inOrder,
                "Keep the stream's order across crashes and lost deliveries: the consumer starts again at its first unacknowledged message (with an `exactly_once` file sink, which skips what it wrote). Only for the single puller of its consumer."
            ),
        ]
    ) { settings, options in
        guard let consumerOptions = options.object("consumer"), !settings.consumer.durable.isEmpty else {
            throw options.error(
                "consumer", "needs a durable name",
                hint: "consumer: { durable: central-p3, filter_subject: \"logs.p3.>\" }")
        }
        let declared = settings.consumer
        try NATSStageOptions.checkName(settings.stream, option: "stream", in: options)
        try NATSStageOptions.checkName(declared.durable, option: "durable", in: consumerOptions)
        var consumer = ConsumerConfig(durable: declared.durable, filterSubject: declared.filterSubject)
        consumer.deliver_policy = declared.deliverPolicy.rawValue
        consumer.ack_policy = declared.ackPolicy.rawValue
        consumer.ack_wait = JetStreamContext.nanoseconds(declared.ackWait)
        consumer.max_ack_pending = declared.maxAckPending
        consumer.max_deliver = declared.maxDeliver
        let pattern = try NATSStageOptions.subjectPattern(settings.subjectPattern, options)
        if declared.ackPolicy == .all, !settings.inOrder {
            // One ack covers every earlier message, also a delivery that
            // was lost on its way: it would never come again. in_order
            // stops at such a gap before anything after it is acknowledged.
            throw options.error(
                "consumer",
                "ack_policy: all needs in_order: true (a cumulative ack would also acknowledge deliveries lost on their way, and those lines would never come again)",
                hint: "add in_order: true, or use ack_policy: explicit")
        }
        if settings.inOrder, !declared.create {
            throw options.error(
                "in_order",
                "needs consumer.create: true: it starts the consumer again at its first unacknowledged message",
                hint: "set consumer.create: true, or in_order: false")
        }
        return JetStreamSource(
            connection: try NATSStageOptions.make(settings.connection, options), stream: settings.stream,
            consumer: consumer, createConsumer: declared.create, batchSize: settings.batch,
            expires: settings.expires, pattern: pattern, stopAfterIdle: settings.stopAfterIdle,
            inOrder: settings.inOrder)
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
                connected = try await NATSStageOptions.connectLoggingEvents(self.connection, context: context.stage)
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
        // A pull waits at most `expires` for messages; with stop_after_idle
        // it must not wait longer than that.
        let pullWait = stopAfterIdle > .zero ? min(expires, stopAfterIdle) : expires
        let pullOptions = PullConsumer.Options(batch: batchSize, expires: pullWait, detectGaps: inOrder)
        var bound: (PullConsumer, ConsumerInfo)?
        while bound == nil {
            do {
                bound = try await PullConsumer.bind(
                    jetstream, stream: stream, config: consumer, create: createConsumer, options: pullOptions)
            } catch NATSError.streamNotFound {
                waiting.still(
                    "stream \(stream)", because: "it does not exist yet (the first jetstream sink creates it)")
            } catch NATSError.noResponders, NATSError.timeout, NATSError.disconnected {
                waiting.still(
                    "stream \(stream)", because: "JetStream does not answer (not enabled, or the server restarts)")
            }
            if bound == nil {
                try await Waiting.pause { context.isStopping }
                if context.isStopping {
                    await connection.close()
                    return
                }
            }
        }
        waiting.over("stream \(stream)")
        let (puller, info) = bound!
        defer { puller.close() }
        context.logger.info("consumer \(consumer.durable_name) on \(stream): \(info.num_pending) message(s) waiting")
        // Records still in the pipeline after half of ack_wait get a +WPI
        // ("working"), so the server does not deliver them again meanwhile.
        let acker = Acker(
            consumer: puller, progressAfter: .nanoseconds(info.config.ack_wait / 2),
            cumulative: info.config.ack_policy == "all")
        let flusher = Task { await acker.run() }
        defer { flusher.cancel() }
        var lastMessage = ContinuousClock.now
        let name = context.name
        // Records are keyed by stream and consumer: two consumers of one
        // stream deliver different messages again.
        let streamID = "\(stream)/\(consumer.durable_name)"
        // Offsets at or below this floor are done for good (passed on with
        // the records, see Record.offsetFloor). With in_order, deliveries
        // are contiguous, so the floor is known here: the highest message
        // of the prefix every sink finished. Otherwise it is the server's
        // acknowledgement floor, asked for every 30 s (a consumer info costs
        // a filtered consumer on nats-server 2.9 a scan of its stream:
        // asked for every 250 ms, it slowed delivery to a crawl).
        var serverFloor = info.ack_floor.map { Int64($0.stream_seq) }
        var floorAsked = ContinuousClock.now

        // Pull requests the server keeps refusing or leaving unanswered (a
        // consumer without a leader after a node restart) are reported once
        // they last 2 s.
        var refusals = Waiting(context: context.stage, grace: .seconds(2))
        var refused = false
        var ignoredWarned: ContinuousClock.Instant?
        pulling: while !context.isStopping {
            if !inOrder, ContinuousClock.now - floorAsked >= .seconds(30) {
                floorAsked = .now
                if let floor = try? await puller.info()?.ack_floor {
                    serverFloor = Int64(floor.stream_seq)
                }
            }
            let ackFloor = inOrder ? max(serverFloor ?? 0, acker.completedFloor ?? 0) : serverFloor
            let fetched: PullConsumer.Fetched
            let fetchStart = ContinuousClock.now
            acker.resetPeak()
            do {
                fetched = try await puller.fetch()
            } catch is CancellationError {
                break pulling
            }
            context.logger.trace(
                "fetched \(fetched.messages.count) message(s) in \(ContinuousClock.now - fetchStart) (empty: \(fetched.empty)); stream sequences \(fetched.messages.first?.metadata.streamSequence ?? 0)...\(fetched.messages.last?.metadata.streamSequence ?? 0), deliveries up to \(fetched.messages.reduce(0) { max($0, $1.metadata.delivered) }); \(acker.outstanding) not acknowledged yet; \(fetched.messages.last?.metadata.pending ?? 0) pending on the server"
            )
            if let reason = fetched.refused {
                context.metrics.count("pull_refusals")
                lastMessage = .now  // refused is not drained: not idle
                refused = true
                refusals.still(
                    "consumer \(consumer.durable_name) on \(stream)",
                    because: "pull requests are refused or go unanswered (\(reason))")
                continue pulling
            }
            if refused {
                refused = false
                refusals.over("consumer \(consumer.durable_name) on \(stream)")
            }
            // Acknowledged, and yet delivered again, more than once: the
            // server does not take this consumer's acknowledgements (seen
            // with nats-server 2.9's replicated consumers after a node
            // restart: an ack floor ahead of the messages it still
            // redelivers, every ack below it ignored, the same messages
            // every ack_wait, forever).
            let acknowledgedFloor = acker.completedFloor ?? .min
            let ignored = fetched.messages.first {
                $0.metadata.delivered >= 3 && Int64($0.metadata.streamSequence) <= acknowledgedFloor
            }
            var records: [Record] = []
            var ackSubjects: [String] = []
            records.reserveCapacity(fetched.messages.count)
            ackSubjects.reserveCapacity(fetched.messages.count)
            let receivedAt = Timestamp.now()
            for message in fetched.messages {
                var record = Record(
                    bytes: message.payload, source: name, origin: message.subject, host: "unknown",
                    receivedAt: receivedAt, subject: message.subject, offset: Int64(message.metadata.streamSequence),
                    streamID: streamID)
                record.offsetFloor = ackFloor
                pattern?.apply(message.subject, to: &record)
                if message.metadata.delivered > 1 {
                    record.fields["deliveries"] = String(message.metadata.delivered)
                    context.metrics.count("redeliveries")
                }
                records.append(record)
                ackSubjects.append(message.ackSubject)
                if records.count >= 1000 { try await emit(&records, &ackSubjects, acker: acker, context: context) }
            }
            try await emit(&records, &ackSubjects, acker: acker, context: context)
            var restartReason = fetched.gap?.description
            if let ignored {
                context.metrics.count("acks_ignored")
                let what =
                    "consumer \(consumer.durable_name) on \(stream) delivers acknowledged messages again (stream sequence \(ignored.metadata.streamSequence), delivery \(ignored.metadata.delivered)): the server does not take its acknowledgements"
                if inOrder {
                    restartReason = what
                } else if ignoredWarned.map({ ContinuousClock.now - $0 >= .seconds(60) }) ?? true {
                    ignoredWarned = .now
                    context.logger.warning(
                        "\(what); they come again every ack_wait until logpipe restarts (with in_order: true the consumer is started again by itself)"
                    )
                }
            }
            if let restartReason {
                guard
                    let start = try await restartInOrder(puller, reason: restartReason, acker: acker, context: context)
                else {
                    break pulling
                }
                serverFloor = max(serverFloor ?? 0, Int64(start) - 1)
                continue pulling
            }
            // A pull that ends empty proves the stream drained only if the
            // server could deliver all along: with max_ack_pending messages
            // unacknowledged (a slow sink) it withholds the rest. A batch
            // below the limit leaves room for acks on their way to it.
            let limit = info.config.max_ack_pending
            let couldDeliver = limit <= 0 || acker.peakOutstanding < max(limit - batchSize, limit / 2)
            if !fetched.messages.isEmpty || !fetched.empty {
                lastMessage = .now
            } else if !couldDeliver {
                lastMessage = .now
            } else if stopAfterIdle > .zero, ContinuousClock.now - lastMessage >= stopAfterIdle {
                break pulling
            }
        }
        puller.close()
        // Acknowledge what the sinks finish (the shutdown deadline cancels).
        while acker.outstanding > 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        await acker.flush()
        await connection.close()
    }

    /// `in_order`: deliveries were lost on their way (or a previous run left
    /// messages unacknowledged), and the server would deliver them again
    /// after newer ones; or the server ignores acknowledgements. Everything
    /// emitted so far is finished and acknowledged first; then the consumer
    /// starts again at its acknowledgement floor, so every message after it
    /// comes again in stream order (the exactly-once file sink skips those
    /// it wrote). Returns the first stream sequence delivered again, or
    /// `nil` when the pipeline stops meanwhile.
    private func restartInOrder(_ puller: PullConsumer, reason: String, acker: Acker, context: SourceContext)
        async throws -> UInt64?
    {
        context.logger.notice(
            "\(reason); restarting consumer \(consumer.durable_name) at its first unacknowledged message to keep the stream's order"
        )
        context.metrics.count("consumer_restarts")
        while acker.outstanding > 0 {
            if context.isStopping { return nil }
            try await Task.sleep(for: .milliseconds(10))
        }
        await acker.flush()
        var waiting = Waiting(context: context.stage)
        while true {
            do {
                let start = try await puller.restart()
                waiting.over("consumer \(consumer.durable_name)")
                context.logger.info("consumer \(consumer.durable_name) delivers again from stream sequence \(start)")
                return start
            } catch NATSError.noResponders, NATSError.timeout, NATSError.disconnected, NATSError.streamNotFound {
                waiting.still("consumer \(consumer.durable_name)", because: "JetStream does not answer to restart it")
            }
            try await Waiting.pause { context.isStopping }
            if context.isStopping { return nil }
        }
    }

    private func emit(_ records: inout [Record], _ ackSubjects: inout [String], acker: Acker, context: SourceContext)
        async throws
    {
        guard !records.isEmpty else { return }
        let id = acker.register(ackSubjects, highest: records.reduce(Int64.min) { max($0, $1.offset ?? .min) })
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
        /// The highest offset (stream sequence) in the batch.
        var highest: Int64
    }

    private struct State {
        var batches: [UInt64: Pending] = [:]
        var next: UInt64 = 0
        var queue: [String] = []
        /// Completed batches not folded into the floor yet (an older one
        /// is still open), by id: their highest offset.
        var completed: [UInt64: Int64] = [:]
        /// The oldest batch not folded into the floor.
        var firstOpen: UInt64 = 0
        var floor: Int64?
        /// The flusher, waiting for acks to send.
        var flusher: CheckedContinuation<Void, Never>?
        var cancelled = false
        /// The most messages outstanding since ``Acker/resetPeak()``.
        var peak = 0

        var outstanding: Int { batches.values.reduce(0) { $0 + $1.remaining } + queue.count }

        /// Records that a batch is complete and folds every complete batch
        /// of the oldest ones into the floor.
        mutating func complete(_ id: UInt64, highest: Int64) {
            completed[id] = highest
            while let high = completed.removeValue(forKey: firstOpen) {
                floor = max(floor ?? .min, high)
                firstOpen += 1
            }
        }
    }

    private let state = Mutex(State())
    private let consumer: PullConsumer
    private let progressAfter: Duration
    /// `ack_policy: all`: one ack covers every earlier message, so only the
    /// last message of the completed prefix is acknowledged.
    private let cumulative: Bool

    init(consumer: PullConsumer, progressAfter: Duration, cumulative: Bool = false) {
        self.consumer = consumer
        self.progressAfter = max(progressAfter, .milliseconds(100))
        self.cumulative = cumulative
    }

    /// Messages emitted whose acknowledgement was not sent yet.
    var outstanding: Int { state.withLock { $0.outstanding } }

    /// The most messages outstanding at once since the last ``resetPeak()``.
    var peakOutstanding: Int { state.withLock { $0.peak } }

    /// Starts measuring ``peakOutstanding`` anew, from what is outstanding now.
    func resetPeak() { state.withLock { $0.peak = $0.outstanding } }

    /// The highest offset of the emitted prefix that every sink finished:
    /// every record emitted before it is done too.
    var completedFloor: Int64? { state.withLock { $0.floor } }

    /// Registers the ack subjects of an emitted batch whose highest offset
    /// is `highest`.
    func register(_ subjects: [String], highest: Int64) -> UInt64 {
        state.withLock { state in
            defer { state.next += 1 }
            state.batches[state.next] = Pending(
                subjects: subjects, done: Array(repeating: false, count: subjects.count), remaining: subjects.count,
                lastProgress: .now, highest: highest)
            state.peak = max(state.peak, state.outstanding)
            return state.next
        }
    }

    /// Queues the acks of records every sink is done with.
    func acknowledged(_ batch: UInt64, _ indices: [Int]) {
        let flusher: CheckedContinuation<Void, Never>? = state.withLock { state in
            guard var pending = state.batches[batch] else { return nil }
            let before = pending.remaining
            for index in indices where index < pending.done.count && !pending.done[index] {
                pending.done[index] = true
                pending.remaining -= 1
                if !cumulative { state.queue.append(pending.subjects[index]) }
            }
            if before > 0, pending.remaining == 0 { state.complete(batch, highest: pending.highest) }
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
            guard !state.queue.isEmpty else { return nil }
            defer { state.flusher = nil }
            return state.flusher
        }
        flusher?.resume()
    }

    /// Sends acks as soon as there are some (no polling: an idle consumer
    /// costs no wake-ups), and `+WPI`s every quarter of `progressAfter`.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    await self.workQueued()
                    await self.flush()
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.progressAfter / 4)
                    await self.sendProgress()
                }
            }
        }
    }

    /// Returns once acks are queued (or the task is cancelled).
    private func workQueued() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state in
                    if !state.queue.isEmpty || state.cancelled || Task.isCancelled { return true }
                    state.flusher = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let flusher = state.withLock { state in
                state.cancelled = true
                defer { state.flusher = nil }
                return state.flusher
            }
            flusher?.resume()
        }
    }

    func flush() async {
        let subjects = state.withLock { state in
            defer { state.queue.removeAll(keepingCapacity: true) }
            return state.queue
        }
        await send(subjects, .ack)
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
        await send(due, .inProgress)
    }

    private func send(_ subjects: [String], _ kind: JetStreamAck) async {
        do {
            try await consumer.acknowledge(subjects, kind)
        } catch {
            // Not acknowledged: the server delivers them again after ack_wait.
        }
    }
}
