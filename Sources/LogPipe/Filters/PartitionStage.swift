/// Where the partition stage takes a record's host from.
public enum HostSource: String, Sendable, CaseIterable {
    /// A `host` field (named regex capture) if present, else the line's own
    /// host field (syslog header, JSON `host`, logfmt `host=`), else the
    /// record's host (this machine's name for local sources).
    case auto
    /// Only the line's own host field; `unknown` when it has none (the rule
    /// of the reference publishers in the benchmarks).
    case line
    /// The record's host as the source set it.
    case record
}

/// Assigns each record a partition, `hash(key) mod partitions`, and a subject
/// such as `logs.p3.web-01.example.net`, so that every line of one host goes
/// to one partition (and one consumer keeps its order).
///
/// The host is made safe by ``HostName/sanitize(_:)`` and stored back on the
/// record; the hash is taken on that safe host (with the default key
/// `{host}`). Values inserted into the subject pass through the same rule, so
/// a publish never fails on a bad subject.
public struct PartitionStage: BatchTransform, FieldProducer, TemplateConsumer {
    /// Settings of a partition stage.
    public struct Options: Sendable {
        /// Number of partitions.
        public var partitions = 8
        /// What is hashed; `{host}` by default.
        public var key: Template
        /// The hash function.
        public var hash: PartitionHash = .crc32
        /// The subject each record gets.
        public var subject: Template
        /// Where the host comes from.
        public var host: HostSource = .auto

        /// Default options: 8 partitions, CRC-32 of the host, `logs.p{partition}.{host}`.
        public init() {
            key = try! Template("{host}")
            subject = try! Template("logs.p{partition}.{host}")
        }
    }

    let options: Options
    private let keyIsHost: Bool

    /// Creates a partition stage.
    public init(options: Options) {
        self.options = options
        self.keyIsHost = options.key.text == "{host}"
    }

    static let definition = StageDefinition.transform(
        "partition",
        summary: "Sets partition = hash(key) mod partitions (CRC-32/IEEE of the host by default) and the subject.",
        options: [
            OptionSpec("partitions", .integer(1...1_000_000), default: "8", "Number of partitions."),
            OptionSpec("key", .template, default: "{host}", "What is hashed."),
            OptionSpec(
                "hash", .choice(PartitionHash.allCases.map(\.rawValue)), default: "crc32",
                "`crc32` (CRC-32/IEEE, as zlib and Go compute it) or `fnv1a` (32-bit)."),
            OptionSpec(
                "subject", .template, default: "logs.p{partition}.{host}",
                "Subject template; inserted values are made subject-safe."),
            OptionSpec(
                "host", .choice(HostSource.allCases.map(\.rawValue)), default: "auto",
                "Where the host comes from: `auto` (a `host` field, else the line's host field, else the record's host), `line` (`unknown` without one), `record`."
            ),
        ]
    ) { options in
        var settings = Options()
        settings.partitions = options.integer("partitions")
        settings.key = try options.template("key") ?? settings.key
        settings.hash = PartitionHash(rawValue: options.string("hash") ?? "crc32") ?? .crc32
        settings.subject = try options.template("subject") ?? settings.subject
        settings.host = HostSource(rawValue: options.string("host") ?? "auto") ?? .auto
        return PartitionStage(options: settings)
    }

    public var producedFields: Set<String> { [] }

    public var templates: [(option: String, template: Template)] {
        [("key", options.key), ("subject", options.subject)]
    }

    /// The partition of a (sanitized) host, as this stage computes it with the default key.
    public func partition(ofHost host: String) -> Int {
        Int(options.hash.hash(host.utf8) % UInt32(options.partitions))
    }

    public func transform(_ batch: inout Batch) throws {
        for index in batch.records.indices {
            var record = batch.records[index]
            record.host = resolveHost(record)
            let key = keyIsHost ? record.host : options.key.render(record)
            record.partition = Int(options.hash.hash(key.utf8) % UInt32(options.partitions))
            record.subject = options.subject.render(record) { HostName.sanitize($0.utf8) }
            batch.records[index] = record
        }
    }

    func resolveHost(_ record: Record) -> String {
        switch options.host {
        case .record:
            return HostName.sanitize(record.host.utf8)
        case .line:
            return record.bytes.withUnsafeReadableBytes { bytes in
                HostName.sanitize(HostName.fromLine(bytes) ?? UnsafeRawBufferPointer(start: nil, count: 0))
            }
        case .auto:
            if let captured = record.fields["host"] { return HostName.sanitize(captured.utf8) }
            return record.bytes.withUnsafeReadableBytes { bytes in
                HostName.fromLine(bytes).map { HostName.sanitize($0) }
            } ?? HostName.sanitize(record.host.utf8)
        }
    }
}
