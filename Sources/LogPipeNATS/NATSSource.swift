import LogPipe
import NATSClient
import NIOCore

/// Subscribes to core NATS subjects and emits each message as a record.
///
/// Records carry the subject, and the host and partition read from it by
/// `subject_pattern` (`logs.p{partition}.{host}`). Core NATS has no
/// redelivery: messages that arrive while the pipeline is slower than the
/// subscription wait in a bounded buffer (`pending_limit`), and beyond it are
/// dropped, counted as `dropped` and logged. When every message matters, use
/// the `jetstream` source.
public struct NATSSource: Source, FieldProducer {
    let connection: NATSOptions
    let subjects: [String]
    let queueGroup: String?
    let pattern: SubjectPattern?
    let pendingLimit: Int
    let batchSize: Int

    struct Settings: NATSStageSettings {
        var connection = NATSConnectionSettings()
        var subjects: [String] = []
        var queueGroup: String?
        var subjectPattern: String?
        var pendingLimit = 65536
        var batchSize = 1000
    }

    static let definition = StageDefinition.source(
        "nats",
        summary:
            "Subscribes to core NATS subjects (optionally in a queue group); no redelivery, bounded pending buffer.",
        options: NATSStageOptions.options(for: Settings.self) + [
            .stringList(
                "subjects", \.subjects, required: true, "Subjects to subscribe to; wildcards `*` and `>` allowed."),
            .string("queue_group", \.queueGroup, "Queue group: each message goes to one member."),
            .string(
                "subject_pattern", \.subjectPattern,
                "Reads fields back from the subject, e.g. `logs.p{partition}.{host}`."),
            .integer(
                "pending_limit", \.pendingLimit, in: 1...10_000_000,
                "Messages buffered while the pipeline is busy; beyond it they are dropped and counted."),
            .integer("batch_size", \.batchSize, in: 1...100_000, "Most records per batch."),
        ]
    ) { settings, options in
        if settings.subjects.isEmpty {
            throw options.error("subjects", "needs at least one subject", hint: "subjects: [\"logs.>\"]")
        }
        return NATSSource(
            connection: try NATSStageOptions.make(settings.connection, options), subjects: settings.subjects,
            queueGroup: settings.queueGroup,
            pattern: try NATSStageOptions.subjectPattern(settings.subjectPattern, options),
            pendingLimit: settings.pendingLimit, batchSize: settings.batchSize)
    }

    /// Fields the subject pattern names besides host and partition.
    public var producedFields: Set<String> {
        guard let pattern else { return [] }
        return Set(pattern.placeholderNames.filter { !["host", "partition"].contains($0) })
    }

    public func run(_ context: SourceContext) async throws {
        let (connection, events) = try await NATSStageOptions.connectLoggingEvents(
            self.connection, context: context.stage)
        defer { events.cancel() }
        var subscriptions: [NATSSubscription] = []
        for subject in subjects {
            subscriptions.append(
                try await connection.subscribe(subject, queueGroup: queueGroup, capacity: pendingLimit))
        }
        try await connection.flush()
        let all = subscriptions
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                await context.waitForStop()
                for subscription in all { subscription.unsubscribe() }
            }
            for subscription in subscriptions {
                group.addTask { try await self.pump(subscription, context: context) }
            }
            // The pumps end when the subscriptions do (at stop).
            for _ in subscriptions { try await group.next() }
            group.cancelAll()
        }
        await connection.close()
    }

    private func pump(_ subscription: NATSSubscription, context: SourceContext) async throws {
        var reportedDrops = 0
        let name = context.name
        let fallbackHost = "unknown"
        while let messages = await subscription.nextBatch(max: batchSize) {
            let now = Timestamp.now()
            var records: [Record] = []
            records.reserveCapacity(messages.count)
            for message in messages {
                var record = Record(
                    bytes: message.payload, source: name, origin: message.subject, host: fallbackHost, receivedAt: now,
                    subject: message.subject)
                pattern?.apply(message.subject, to: &record)
                records.append(record)
            }
            try await context.emit(records)
            let dropped = subscription.droppedCount
            if dropped > reportedDrops {
                context.metrics.count("dropped", by: dropped - reportedDrops)
                reportedDrops = dropped
            }
        }
    }
}
