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

    static let definition = StageDefinition.sink(
        "nats",
        summary: "Publishes each record to core NATS on a subject template; acknowledges after a PING/PONG per batch.",
        options: NATSStageOptions.specs + [
            OptionSpec(
                "subject", .template, default: "{subject}",
                "Subject template; inserted values are made subject-safe. Default: the record's subject."),
            OptionSpec("headers", .stringList, "Headers as `Name: template` items, e.g. `X-Host: {host}`."),
            OptionSpec(
                "on_oversize", .choice(OversizeMessagePolicy.allCases.map(\.rawValue)), default: "drop",
                "A record larger than the server's max_payload: `drop` (counted, logged) or `fail` the pipeline."),
        ]
    ) { options in
        let connection = try NATSStageOptions.make(options)
        guard let subject = try options.template("subject") else { throw options.error("subject", "is required") }
        var headers: [(String, Template)] = []
        for (index, item) in options.stringList("headers").enumerated() {
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
            connection: connection, subject: subject, headers: headers,
            onOversize: OversizeMessagePolicy(rawValue: options.string("on_oversize") ?? "drop") ?? .drop)
    }

    public func run(input: BatchInput, context: StageContext) async throws {
        let (connection, events) = try await NATSStageOptions.connect(self.connection, context: context)
        defer { events.cancel() }
        var reportedOversize = false
        for await batch in input {
            let maxPayload = connection.maxPayload
            var messages: [NATSConnection.OutgoingMessage] = []
            messages.reserveCapacity(batch.count)
            var oversize: [Record] = []
            var kept: [Record] = []
            kept.reserveCapacity(batch.count)
            for record in batch.records {
                let message = encode(record)
                if message.payload.readableBytes > maxPayload {
                    oversize.append(record)
                    continue
                }
                messages.append(message)
                kept.append(record)
            }
            if !oversize.isEmpty {
                if onOversize == .fail {
                    throw NATSError.maxPayloadExceeded(
                        subject: subject.render(oversize[0]), size: oversize[0].bytes.readableBytes,
                        maxPayload: maxPayload)
                }
                context.metrics.count("oversize_messages", by: oversize.count)
                if !reportedOversize {
                    context.logger.error(
                        "records larger than the server's max_payload (\(maxPayload) bytes) were dropped (counted as oversize_messages); raise max_payload or set a smaller max_line_bytes"
                    )
                    reportedOversize = true
                }
                Batch.acknowledge(oversize, status: .failed)
            }
            try await publishConfirmed(messages, on: connection, context: context)
            Batch.acknowledge(kept)
            context.metrics.recordsDelivered.add(kept.count, ordering: .relaxed)
        }
        await connection.close()
    }

    func encode(_ record: Record) -> NATSConnection.OutgoingMessage {
        let subject = self.subject.render(record) { HostName.sanitize($0.utf8) }
        var headerValues: NATSHeaders?
        if !headers.isEmpty {
            var values = NATSHeaders()
            for (name, template) in headers { values.append(name, template.render(record)) }
            headerValues = values
        }
        return NATSConnection.OutgoingMessage(subject: subject, payload: record.bytes, headers: headerValues)
    }

    /// Publishes and confirms with a PING/PONG; after a disconnect or a time
    /// out, waits for the connection and publishes the batch again.
    func publishConfirmed(
        _ messages: [NATSConnection.OutgoingMessage], on connection: NATSConnection, context: StageContext
    ) async throws {
        guard !messages.isEmpty else { return }
        var attempts = 0
        while true {
            do {
                try await connection.publish(messages)
                try await connection.flush(timeout: .seconds(10))
                return
            } catch NATSError.disconnected, NATSError.timeout {
                attempts += 1
                context.metrics.count("republished_batches")
                if attempts == 1 || attempts % 10 == 0 {
                    context.logger.warning(
                        "a batch of \(messages.count) was not confirmed (connection lost); publishing it again after reconnecting"
                    )
                }
                try await connection.waitUntilConnected()
                try Task.checkCancellation()
            }
        }
    }
}
