import Foundation
import LogPipe
import LogPipeBase
import NATSClient
import NIOCore
import Synchronization

/// What the JetStream sink does with a message the server refuses (too
/// large, a wrong expected sequence): a JSON error in the publish acknowledgement.
public enum RejectionPolicy: String, Sendable, CaseIterable {
    /// Stop the pipeline with the server's error.
    case fail
    /// Skip the record: counted as `rejected`, logged, written to
    /// `dead_letter_file` when set, acknowledged as failed.
    case drop
}

/// What the JetStream sink does with a record whose message (payload plus
/// `Nats-Msg-Id` header) is larger than the server's `max_payload`.
public enum JetStreamOversizePolicy: String, Sendable, CaseIterable {
    /// Publish it in pieces that fit, in order, each with its own id
    /// (`<id>:<n>`): nothing is lost, as the sources split lines longer
    /// than `max_line_bytes`. Counted as `oversize_split`.
    case split
    /// Skip it: counted as `oversize_messages`, logged, written to
    /// `dead_letter_file` when set, acknowledged as failed.
    case drop
    /// Stop the pipeline with an error naming the sizes.
    case fail
}

/// Publishes each record to a JetStream stream and acknowledges it to the
/// pipeline only when the stream stored it.
///
/// Every message carries a deterministic `Nats-Msg-Id` (shipping host, stage,
/// file fingerprint and byte offset for file sources), so a retry or a replay
/// after a crash is recognised by the stream as a duplicate inside its
/// `duplicate_window`. Up to `max_in_flight` messages await their
/// acknowledgements; time-outs, 503 (no stream) and disconnects are retried
/// in order with the same ids.
public struct JetStreamSink: Sink {
    let connection: NATSOptions
    let stream: StreamConfig?
    /// The stream settings the pipeline states (`StreamConfig` names): only
    /// these are compared with an existing stream; the others are defaults
    /// for creating one (a cluster's R3 stream is not "different" from a
    /// pipeline that never mentions replicas).
    let statedStreamSettings: Set<String>
    let streamName: String
    let create: Bool
    let update: Bool
    let subject: Template
    let messageID: Template?
    /// Whether messages carry `Nats-Msg-Id`.
    let deduplicate: Bool
    let maxInFlight: Int
    let ackTimeout: Duration
    let onRejected: RejectionPolicy
    let onOversize: JetStreamOversizePolicy
    let deadLetterFile: String?

    struct Settings: NATSStageSettings {
        struct Stream: StageSettings {
            enum Storage: String, CaseIterable, Sendable { case file, memory }
            enum Retention: String, CaseIterable, Sendable { case limits, interest, workqueue }
            var name = ""
            var subjects: [String] = []
            var storage: Storage = .file
            var retention: Retention = .limits
            var maxAge: Duration = .zero
            var maxBytes: Int?
            var maxMessages = -1
            var duplicateWindow: Duration = .seconds(120)
            var replicas = 1
            var create = true
            var update = false
        }

        var connection = NATSConnectionSettings()
        var stream = Stream()
        var subject = try! Template("{subject}")
        var messageID: Template?
        var deduplicate = true
        var maxInFlight = 4096
        var ackTimeout: Duration = .seconds(5)
        var onRejected: RejectionPolicy = .fail
        var onOversize: JetStreamOversizePolicy = .split
        var deadLetterFile: String?
    }

    static let streamOptions: [StageOption<Settings.Stream>] = [
        .string("name", \.name, required: true, "Stream name."),
        .stringList("subjects", \.subjects, "Subjects the stream stores (default: the stream name + `.>`)."),
        .choice("storage", \.storage, "Storage."),
        .choice("retention", \.retention, "Retention policy."),
        .duration("max_age", \.maxAge, "Oldest message kept (0: no limit), e.g. `1d`."),
        .custom("max_bytes", .size, "Most bytes kept (default: no limit).") { options, stream in
            stream.maxBytes = options.size("max_bytes")
        },
        .integer("max_msgs", \.maxMessages, in: -1...Int.max, "Most messages kept (-1: no limit)."),
        .duration("duplicate_window", \.duplicateWindow, "How long message ids are remembered for de-duplication."),
        .integer("replicas", \.replicas, in: 1...5, "Replicas (3 for a cluster)."),
        .boolean("create", \.create, "Create the stream when missing."),
        .boolean("update", \.update, "Change an existing stream whose settings differ (otherwise that is an error)."),
    ]

    static let definition = StageDefinition.sink(
        "jetstream",
        summary:
            "Publishes each record to a JetStream stream with a deterministic message id; acknowledges when stored.",
        options: NATSStageOptions.options(for: Settings.self) + [
            .object(
                "stream", \.stream, streamOptions, required: true,
                "The stream: `{name, subjects, storage, max_age, ...}`; created or checked at start."),
            .template("subject", \.subject, "Subject template (default: the record's subject)."),
            .template(
                "msg_id", \.messageID,
                "Template for `Nats-Msg-Id` (default: host, stage, file fingerprint and offset)."),
            .boolean(
                "deduplicate", \.deduplicate,
                "Set `Nats-Msg-Id` so the stream drops a line published twice (a retry, a replay after a crash). `false` saves the server its de-duplication work (about a fifth of its CPU per message) but a replay stores lines again."
            ),
            .integer(
                "max_in_flight", \.maxInFlight, in: 1...1_000_000, "Messages awaiting their acknowledgement at most."),
            .duration(
                "ack_timeout", \.ackTimeout,
                "How long to wait for an acknowledgement before publishing again (same id)."),
            .choice(
                "on_rejected", \.onRejected, "A message the server refuses: `fail` the pipeline or `drop` it (counted)."
            ),
            .choice(
                "on_oversize", \.onOversize,
                "A record whose message exceeds the server's max_payload (headers included): `split` it into messages that fit (ids `<id>:<n>`), `drop` it (counted, dead-lettered) or `fail`."
            ),
            .string(
                "dead_letter_file", \.deadLetterFile,
                "With `on_rejected: drop` or `on_oversize: drop`, append the records not stored to this file."),
        ]
    ) { settings, options in
        guard let streamOptions = options.object("stream"), !settings.stream.name.isEmpty else {
            throw options.error("stream", "needs a name", hint: "stream: { name: LOGS, subjects: [\"logs.>\"] }")
        }
        let stream = settings.stream
        try NATSStageOptions.checkName(stream.name, option: "name", in: streamOptions)
        var config = StreamConfig(name: stream.name, subjects: stream.subjects)
        if config.subjects.isEmpty { config.subjects = [stream.name.lowercased() + ".>"] }
        config.storage = stream.storage.rawValue
        config.retention = stream.retention.rawValue
        config.max_age = JetStreamContext.nanoseconds(stream.maxAge)
        config.max_bytes = stream.maxBytes.map { Int64($0) } ?? -1
        config.max_msgs = Int64(stream.maxMessages)
        config.duplicate_window = JetStreamContext.nanoseconds(stream.duplicateWindow)
        config.num_replicas = stream.replicas
        if settings.messageID != nil, !settings.deduplicate {
            throw options.error("msg_id", "is not sent with deduplicate: false", hint: "remove msg_id or deduplicate")
        }
        if settings.deadLetterFile != nil, settings.onRejected != .drop, settings.onOversize != .drop {
            throw options.error("dead_letter_file", "is only used with on_rejected: drop or on_oversize: drop")
        }
        let settingNames = [
            "subjects": "subjects", "storage": "storage", "retention": "retention", "max_age": "max_age",
            "max_bytes": "max_bytes", "max_msgs": "max_msgs", "duplicate_window": "duplicate_window",
            "replicas": "num_replicas",
        ]
        let stated = Set(settingNames.filter { streamOptions.isSet($0.key) }.values)
        return JetStreamSink(
            connection: try NATSStageOptions.make(settings.connection, options), stream: config,
            statedStreamSettings: stated, streamName: stream.name, create: stream.create, update: stream.update,
            subject: settings.subject, messageID: settings.messageID, deduplicate: settings.deduplicate,
            maxInFlight: settings.maxInFlight, ackTimeout: settings.ackTimeout, onRejected: settings.onRejected,
            onOversize: settings.onOversize, deadLetterFile: settings.deadLetterFile)
    }

    /// One published chunk of a batch awaiting its acknowledgements.
    struct InFlight: Sendable {
        var records: ArraySlice<Record>
        var messages: [JetStreamPublisher.Message]
        /// The record (0: the chunk's first) of each message, when messages
        /// and records are not one to one (split or dropped oversize records).
        var owners: [Int]?
        /// Records not published because they were too large (`on_oversize: drop`).
        var oversize: [Int]
        var tracker: PublishTracker
    }

    /// The messages of a chunk, with how they map to its records.
    struct Chunk {
        var messages: [JetStreamPublisher.Message] = []
        var owners: [Int]?
        var oversize: [Int] = []
        var split = 0
    }

    /// Header bytes of a message besides the id itself:
    /// `NATS/1.0\r\n` + `Nats-Msg-Id: ` + `\r\n` + `\r\n`, with room to spare.
    static let headerOverhead = 32

    /// The messages for `records`, fields read in place (passing a record to
    /// a function copies it: a retain and a release per field). A record
    /// too large for `maxPayload` follows ``JetStreamOversizePolicy``.
    func messages(for records: ArraySlice<Record>, run: RunIdentity, maxPayload: Int) throws -> Chunk {
        let subjectIsRecordSubject = subject.text == "{subject}"
        var chunk = Chunk()
        chunk.messages.reserveCapacity(records.count)
        try records.withUnsafeBufferPointer { records in
            for index in records.indices {
                let id: String? =
                    !deduplicate
                    ? nil
                    : messageID.map { $0.render(records[index]) }
                        ?? run.messageID(
                            streamID: records[index].streamID, offset: records[index].offset,
                            source: records[index].source)
                let subject =
                    subjectIsRecordSubject
                    ? HostName.sanitize(records[index].subject ?? "unknown")
                    : HostName.sanitize(self.subject.render(records[index]))
                let payload = records[index].bytes
                // A piece id adds up to 8 bytes (`:<n>`).
                let room = maxPayload - (id.map { Self.headerOverhead + $0.utf8.count + 8 } ?? 0)
                if payload.readableBytes <= room || (id == nil && payload.readableBytes <= maxPayload) {
                    chunk.messages.append(JetStreamPublisher.Message(subject: subject, payload: payload, messageID: id))
                    chunk.owners?.append(index)
                    continue
                }
                if chunk.owners == nil { chunk.owners = Array(0..<chunk.messages.count) }
                switch onOversize {
                case .fail:
                    throw NATSError.maxPayloadExceeded(
                        subject: subject, size: payload.readableBytes + (maxPayload - room), maxPayload: maxPayload)
                case .drop:
                    chunk.oversize.append(index)
                case .split:
                    guard room > 0 else {
                        throw NATSError.serverError(
                            "the server's max_payload (\(maxPayload) bytes) leaves no room for a payload next to the Nats-Msg-Id header; raise max_payload"
                        )
                    }
                    chunk.split += 1
                    var start = 0
                    var piece = 0
                    while start < payload.readableBytes {
                        let length = min(room, payload.readableBytes - start)
                        chunk.messages.append(
                            JetStreamPublisher.Message(
                                subject: subject,
                                payload: payload.getSlice(at: payload.readerIndex + start, length: length)!,
                                messageID: id.map { $0 + ":" + String(piece) }))
                        chunk.owners!.append(index)
                        start += length
                        piece += 1
                    }
                }
            }
        }
        return chunk
    }

    public func run(input: BatchInput, context: StageContext) async throws {
        let (connection, events) = try await NATSStageOptions.connectLoggingEvents(self.connection, context: context)
        defer { events.cancel() }
        let jetstream = JetStreamContext(connection: connection)
        var streamSubjects: [String]? = nil
        var duplicateWindow: Duration? = nil
        if let stream {
            // With create: false the stream is someone else's to create:
            // wait for it (records wait upstream meanwhile).
            var waiting = Waiting(context: context)
            var ready: StreamInfo?
            while ready == nil {
                do {
                    ready = try await jetstream.ensureStream(
                        stream, create: create, update: update, compared: statedStreamSettings)
                } catch NATSError.streamNotFound {
                    waiting.still(
                        "stream \(streamName)", because: "it does not exist and stream.create is false")
                    try await Task.sleep(for: .seconds(1))
                }
            }
            waiting.over("stream \(streamName)")
            streamSubjects = ready!.config.subjects
            duplicateWindow = .nanoseconds(ready!.config.duplicate_window)
            context.logger.info("stream \(streamName) ready (\(ready!.state.messages) messages)")
        }
        let publisher = try await JetStreamPublisher(connection: connection)
        context.metrics.observe("jetstream_pending_acks") { Double(publisher.pendingAcks) }
        let run = RunIdentity(hostname: context.hostname)
        // Publishing and settling run apart: the settler acknowledges
        // batches, in order, as their acks arrive, without waiting for more
        // input (a source may wait for exactly these acknowledgements).
        let inFlight = BoundedChannel<InFlight>(capacity: 1024)
        let settler = Task {
            // The duplicate_window error is logged once; the metric counts.
            var reportedPastWindow = false
            do {
                while let item = await inFlight.receive() {
                    try await settle(
                        item, publisher: publisher, streamSubjects: streamSubjects, duplicateWindow: duplicateWindow,
                        reportedPastWindow: &reportedPastWindow, context: context)
                }
            } catch {
                inFlight.close()
                throw error
            }
        }
        defer { settler.cancel() }
        // Chunks of a quarter window keep the window full: a chunk is
        // published as soon as that much room is free. A chunk is a slice of
        // its batch: its records are not copied.
        let chunk = max(1, maxInFlight / 4)
        var failed = false
        var reportedOversize = false
        for await batch in input {
            var start = 0
            while start < batch.count {
                let end = min(start + chunk, batch.count)
                let part = try messages(for: batch.records[start..<end], run: run, maxPayload: connection.maxPayload)
                if part.split > 0 { context.metrics.count("oversize_split", by: part.split) }
                if !part.oversize.isEmpty { context.metrics.count("oversize_messages", by: part.oversize.count) }
                if (part.split > 0 || !part.oversize.isEmpty) && !reportedOversize {
                    reportedOversize = true
                    context.logger.warning(
                        "records larger than the server's max_payload (\(connection.maxPayload) bytes, Nats-Msg-Id header included) were \(onOversize == .split ? "published in pieces (counted as oversize_split)" : "dropped (counted as oversize_messages)"); raise max_payload or set a smaller max_line_bytes"
                    )
                }
                await publisher.waitForRoom(limit: maxInFlight - part.messages.count + 1)
                try Task.checkCancellation()
                let tracker = try await publishRetrying(part.messages, with: publisher, context: context)
                do {
                    try await inFlight.send(
                        InFlight(
                            records: batch.records[start..<end], messages: part.messages, owners: part.owners,
                            oversize: part.oversize, tracker: tracker))
                } catch is ChannelClosedError {
                    failed = true  // the settler failed; its error is thrown below
                    break
                }
                start = end
            }
            if failed { break }
        }
        inFlight.finishProducer()
        // The settler is a task of its own: cancelling this stage (the
        // shutdown deadline) must reach it, or a sink that keeps retrying
        // would hold the process past its deadline.
        try await settler.valueCancelledWithCaller { inFlight.close() }
        await connection.close()
    }

    func publishRetrying(
        _ messages: [JetStreamPublisher.Message], with publisher: JetStreamPublisher, context: StageContext
    )
        async throws -> PublishTracker
    {
        while true {
            do {
                return try await publisher.publish(messages)
            } catch NATSError.disconnected {
                try await publisher.connection.waitUntilConnected()
            }
        }
    }

    /// Waits for every acknowledgement of a batch, publishing again (same
    /// ids, in order) what timed out or found no stream, then acknowledges the
    /// batch to the pipeline.
    ///
    /// `ack_timeout` counts from each publish, so the batches in flight when
    /// the stream went away are all published again one `ack_timeout` later
    /// (they used to wait their turn, `ack_timeout` each). A retry after the
    /// stream's `duplicate_window` (`duplicateWindow`, when known) is
    /// reported: a first attempt that was stored but not acknowledged is
    /// then stored twice.
    func settle(
        _ item: InFlight, publisher: JetStreamPublisher, streamSubjects: [String]?, duplicateWindow: Duration?,
        reportedPastWindow: inout Bool, context: StageContext
    ) async throws {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        var attempts = 0
        var tracker = item.tracker
        let firstPublished = tracker.publishedAt
        // Positions in `tracker` → indices in the batch.
        var mapping = Array(item.messages.indices)
        var rejected: [Int] = []
        while true {
            await tracker.wait(until: tracker.publishedAt + ackTimeout)
            let results = tracker.results
            publisher.forget(tracker)
            var retry: [Int] = []
            var unanswered = 0
            for (position, index) in mapping.enumerated() {
                switch results[position] {
                case .stored(_, let duplicate):
                    if duplicate { context.metrics.count("duplicates") }
                case .noResponders:
                    let subject = item.messages[index].subject
                    if let streamSubjects,
                        !streamSubjects.contains(where: { NATSSubject.matches(pattern: $0, subject: subject) })
                    {
                        // Retrying cannot help: no stream will ever store it.
                        throw NATSError.serverError(
                            "no stream stores subject '\(subject)': stream \(streamName) takes \(streamSubjects); change the sink's subject or add the subject to the stream's subjects"
                        )
                    }
                    retry.append(index)
                case nil:
                    unanswered += 1
                    retry.append(index)
                case .rejected(let error):
                    if onRejected == .fail {
                        throw NATSError.serverError(
                            "the stream refused a message on '\(item.messages[index].subject)': \(error.description) (code \(error.code)\(error.err_code.map { ", err_code \($0)" } ?? "")); fix the cause or set on_rejected: drop"
                        )
                    }
                    rejected.append(index)
                }
            }
            if retry.isEmpty { break }
            attempts += 1
            context.metrics.count("retries", by: retry.count)
            if attempts == 1 || attempts % 10 == 0 {
                let first = item.messages[retry[0]].subject
                let why =
                    unanswered == retry.count
                    ? "no acknowledgement within ack_timeout or connection lost"
                    : "no stream answered (503: the stream is missing or its server is restarting)"
                context.logger.warning(
                    "\(retry.count) message(s) (first on '\(first)') not stored by stream \(streamName): \(why); attempt \(attempts), publishing them again with the same ids"
                )
            }
            try await backoff.sleep()
            try await publisher.connection.waitUntilConnected()
            if let duplicateWindow, ContinuousClock.now - firstPublished > duplicateWindow {
                context.metrics.count("retries_past_duplicate_window", by: retry.count)
                if !reportedPastWindow {
                    reportedPastWindow = true
                    context.logger.error(
                        "publishing again messages first published more than the stream's duplicate_window (\(duplicateWindow)) ago: those the stream stored without acknowledging are now stored twice (counted as retries_past_duplicate_window); raise the stream's duplicate_window above the longest outage to ride out"
                    )
                }
            }
            tracker = try await publishRetrying(retry.map { item.messages[$0] }, with: publisher, context: context)
            mapping = retry
        }
        if !rejected.isEmpty {
            context.metrics.count("rejected", by: rejected.count)
            context.logger.error(
                "\(rejected.count) message(s) refused by the stream were dropped (counted as rejected)")
        }
        // Records not stored: refused (any of their messages) or too large.
        let failed = Set(rejected.map { item.owners?[$0] ?? $0 }).union(item.oversize)
        if failed.isEmpty {
            Batch.acknowledge(item.records)
        } else {
            if let deadLetterFile {
                var text = ""
                for index in failed.sorted() { text += item.records[item.records.startIndex + index].text + "\n" }
                try appendToDeadLetters(text, path: deadLetterFile)
            }
            Batch.acknowledge(item.records, failing: failed)
        }
        context.metrics.recordsDelivered.add(item.records.count - failed.count, ordering: .relaxed)
    }

    func appendToDeadLetters(_ text: String, path: String) throws {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw NATSError.serverError("cannot open dead_letter_file \(path)")
        }
        handle.seekToEndOfFile()
        handle.write(Data(text.utf8))
        try handle.close()
    }
}

/// Deterministic message ids.
///
/// A record from a source that knows where it read it (a file: fingerprint
/// and offset) gets `host:stage:fingerprint:offset`, the same after a crash
/// and restart, so the stream drops the replay. Other records (stdin, app
/// streams, generated lines) get an id unique to this run, which still makes
/// retries idempotent.
struct RunIdentity: Sendable {
    let hostname: String
    let run: String
    let counter = Counter()

    final class Counter: Sendable {
        private let value = Atomic<UInt64>(0)
        func next() -> UInt64 { value.add(1, ordering: .relaxed).newValue }
    }

    init(hostname: String) {
        self.hostname = hostname
        self.run = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    func messageID(streamID: String?, offset: Int64?, source: String) -> String {
        if let streamID, let offset {
            return "\(hostname):\(source):\(streamID):\(offset)"
        }
        return "\(hostname):\(run):\(counter.next())"
    }
}
