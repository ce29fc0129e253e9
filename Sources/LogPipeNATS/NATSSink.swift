import LogPipe
import NATSClient
import NIOCore

/// What the NATS sinks do with a record larger than the server's `max_payload`.
public enum OversizeMessagePolicy: String, Sendable, CaseIterable {
    /// Skip it: counted as `oversize_messages`, logged, acknowledged as failed.
    case drop
    /// Stop the pipeline with an error.
    case fail
}

/// Publishes each record to NATS (core, no persistence) on a subject from a
/// template (the record's subject by default, as the partition stage sets it).
///
/// A batch is written with one flush and acknowledged once the server has
/// confirmed receipt of everything written before (one PING/PONG round trip
/// per batch). If the connection breaks, the batch is published again after
/// the reconnect: core NATS delivers at most once per publish, so a line may
/// arrive twice but is not lost while the sink holds it. Use the `jetstream`
/// sink for storage with acknowledgements per message.
public struct NATSSink: Sink {
    let connection: NATSOptions
    let subject: Template
    let headers: [(String, Template)]
    let onOversize: OversizeMessagePolicy
    /// The subject template is `{subject}`: take the record's subject as is.
    let subjectIsRecordSubject: Bool

    init(connection: NATSOptions, subject: Template, headers: [(String, Template)], onOversize: OversizeMessagePolicy) {
        self.connection = connection
        self.subject = subject
        self.headers = headers
        self.onOversize = onOversize
        self.subjectIsRecordSubject = subject.text == "{subject}"
    }

    struct Settings: NATSStageSettings {
        var connection = NATSConnectionSettings()
        var subject = try! Template("{subject}")
        var headers: [String] = []
        var onOversize: OversizeMessagePolicy = .drop
    }

    static let definition = StageDefinition.sink(
        "nats",
        summary: "Publishes each record to core NATS on a subject template; acknowledges after a PING/PONG per batch.",
        options: NATSStageOptions.options(for: Settings.self) + [
            .template(
                "subject", \.subject,
                "Subject template; inserted values are made subject-safe. Default: the record's subject."),
            .stringList("headers", \.headers, "Headers as `Name: template` items, e.g. `X-Host: {host}`."),
            .choice(
                "on_oversize", \.onOversize,
                "A record larger than the server's max_payload: `drop` (counted, logged) or `fail` the pipeline."),
        ]
    ) { settings, options in
        let connection = try NATSStageOptions.make(settings.connection, options)
        var headers: [(String, Template)] = []
        for (index, item) in settings.headers.enumerated() {
            guard let colon = item.firstIndex(of: ":"), colon != item.startIndex else {
                throw options.error(
                    "headers", item: index, "'\(item)' is not 'Name: template'", hint: "headers: [\"X-Host: {host}\"]")
            }
            let value = item[item.index(after: colon)...].drop { $0 == " " }
            do {
                headers.append((String(item[..<colon]), try Template(String(value))))
            } catch let error as Template.ParseError {
                throw options.error("headers", item: index, error.message, hint: error.hint)
            }
        }
        return NATSSink(
            connection: connection, subject: settings.subject, headers: headers, onOversize: settings.onOversize)
    }

    public func run(input: BatchInput, context: StageContext) async throws {
        let (connection, events) = try await NATSStageOptions.connectLoggingEvents(self.connection, context: context)
        defer { events.cancel() }
        var reportedOversize = false
        // Pipelined: batches go out while earlier ones wait for their PONG; a
        // task of its own acknowledges them, in order, as the PONGs come (it
        // must not wait for more input: a source may wait for these acks).
        let unconfirmed = BoundedChannel<Unconfirmed>(capacity: maxUnconfirmedBatches)
        let settler = Task {
            do {
                while let item = await unconfirmed.receive() {
                    try await settle(item, on: connection, context: context)
                }
            } catch {
                unconfirmed.close()
                throw error
            }
        }
        defer { settler.cancel() }
        for await batch in input {
            var oversize: [Int] = []
            let messages = try batch.records.withUnsafeBufferPointer { records in
                if subjectIsRecordSubject && headers.isEmpty {
                    return try encodeWithRecordSubjects(records, on: connection, oversize: &oversize)
                }
                // Fields are read in place: copying a record costs a retain per field.
                var size = 0
                for index in records.indices { size += records[index].bytes.readableBytes + 48 }
                var messages = connection.makePublishBuffer(capacity: size)
                for index in records.indices {
                    do {
                        // Only the subject is read out: passing the whole record
                        // to a function copies it (a retain per field).
                        let subject =
                            subjectIsRecordSubject
                            ? HostName.sanitize(records[index].subject ?? "unknown") : subject(for: records[index])
                        try messages.append(
                            subject: subject, payload: records[index].bytes,
                            headers: headers.isEmpty ? nil : headers(for: records[index]), subjectIsValid: true)
                    } catch NATSError.maxPayloadExceeded(let subject, let size, let maxPayload) {
                        if onOversize == .fail {
                            throw NATSError.maxPayloadExceeded(subject: subject, size: size, maxPayload: maxPayload)
                        }
                        oversize.append(index)
                    }
                }
                return messages
            }
            if !oversize.isEmpty {
                context.metrics.count("oversize_messages", by: oversize.count)
                if !reportedOversize {
                    context.logger.error(
                        "records larger than the server's max_payload (\(messages.maxPayload) bytes) were dropped (counted as oversize_messages); raise max_payload or set a smaller max_line_bytes"
                    )
                    reportedOversize = true
                }
            }
            try await connection.publish(messages)
            do {
                try await unconfirmed.send(
                    Unconfirmed(
                        batch: batch, messages: messages, oversize: oversize, confirmation: confirm(on: connection)))
            } catch is ChannelClosedError {
                break  // the settler failed; its error is thrown below
            }
        }
        unconfirmed.finishProducer()
        try await settler.valueCancelledWithCaller { unconfirmed.close() }
        await connection.close()
    }

    /// The common case, `subject: "{subject}"` and no headers: frames are
    /// written straight from each record's subject and bytes into one region
    /// of the buffer (no `String` or `ByteBuffer` copied per record).
    func encodeWithRecordSubjects(
        _ records: UnsafeBufferPointer<Record>, on connection: NATSConnection, oversize: inout [Int]
    ) throws -> NATSConnection.PublishBuffer {
        var capacity = 0
        for index in records.indices {
            // A subject made safe is never longer than the original, or it is "unknown".
            let subjectBound = max(records[index].subject?.utf8.count ?? 0, 7)
            capacity += FrameWriter.frameSize(subject: subjectBound, payload: records[index].bytes.readableBytes)
        }
        var messages = connection.makePublishBuffer(capacity: capacity)
        messages.appendFrames(capacity: capacity) { writer in
            for index in records.indices {
                let written = records[index].bytes.withUnsafeReadableBytes { payload in
                    Self.withSafeSubject(records[index].subject) { writer.publish(subject: $0, payload: payload) }
                }
                if !written { oversize.append(index) }
            }
        }
        if onOversize == .fail, let first = oversize.first {
            throw NATSError.maxPayloadExceeded(
                subject: HostName.sanitize(records[first].subject ?? "unknown"),
                size: records[first].bytes.readableBytes, maxPayload: messages.maxPayload)
        }
        return messages
    }

    /// `subject`'s bytes if it is a safe subject, else those of its safe form.
    @inline(__always)
    static func withSafeSubject<Result>(_ subject: String?, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        if let subject {
            let inPlace: Result?? = subject.utf8.withContiguousStorageIfAvailable { bytes in
                let raw = UnsafeRawBufferPointer(bytes)
                return HostName.isSafe(raw) ? body(raw) : nil
            }
            if case .some(.some(let result)) = inPlace { return result }
        }
        var safe = HostName.sanitize(subject ?? "unknown")
        return safe.withUTF8 { body(UnsafeRawBufferPointer($0)) }
    }

    /// The subject template rendered for `record`, every inserted value made safe.
    @inline(__always)
    func subject(for record: Record) -> String {
        subject.render(record) { HostName.sanitize($0) }
    }

    @inline(__always)
    func headers(for record: Record) -> NATSHeaders? {
        guard !headers.isEmpty else { return nil }
        var values = NATSHeaders()
        for (name, template) in headers { values.append(name, template.render(record)) }
        return values
    }

    /// Batches published but not yet confirmed, at most.
    let maxUnconfirmedBatches = 2

    struct Unconfirmed: Sendable {
        var batch: Batch
        var messages: NATSConnection.PublishBuffer
        var oversize: [Int]
        var confirmation: Task<Void, any Error>
    }

    func confirm(on connection: NATSConnection) -> Task<Void, any Error> {
        Task { try await connection.flush(timeout: .seconds(10)) }
    }

    /// Waits for a batch's PONG and acknowledges it. If the connection broke
    /// (or the PONG is late), the batch is published again once the
    /// connection is back; later batches fail their PONG the same way and
    /// follow in order.
    func settle(_ item: Unconfirmed, on connection: NATSConnection, context: StageContext) async throws {
        var item = item
        var attempts = 0
        while true {
            do {
                try await item.confirmation.value
                if item.oversize.isEmpty {
                    item.batch.acknowledge()
                } else {
                    Batch.acknowledge(item.batch.records[...], failing: Set(item.oversize))
                }
                context.metrics.recordsDelivered.add(item.batch.count - item.oversize.count, ordering: .relaxed)
                return
            } catch NATSError.disconnected, NATSError.timeout {
                attempts += 1
                context.metrics.count("republished_batches")
                if attempts == 1 || attempts % 10 == 0 {
                    context.logger.warning(
                        "a batch was not confirmed (connection lost); publishing it again after reconnecting")
                }
                try await connection.waitUntilConnected()
                try Task.checkCancellation()
                try await connection.publish(item.messages)
                item.confirmation = confirm(on: connection)
            }
        }
    }
}
