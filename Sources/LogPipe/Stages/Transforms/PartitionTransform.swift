#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
/// The host is made safe by ``HostName/sanitize(_:)-(String)`` and stored back on the
/// record; the hash is taken on that safe host (with the default key
/// `{host}`). Values inserted into the subject pass through the same rule, so
/// a publish never fails on a bad subject.
public struct PartitionTransform: BatchTransform, FieldProducer, TemplateConsumer {
    /// Settings of a partition stage.
    public struct Options: StageSettings {
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
    /// The subject uses only `{host}` and `{partition}`: it can be cached per host.
    private let subjectDependsOnHostOnly: Bool

    /// Creates a partition stage.
    public init(options: Options) {
        self.options = options
        self.keyIsHost = options.key.text == "{host}"
        self.subjectDependsOnHostOnly = options.subject.placeholders.allSatisfy { $0 == "host" || $0 == "partition" }
    }

    static let definition = StageDefinition.transform(
        "partition",
        summary: "Sets partition = hash(key) mod partitions (CRC-32/IEEE of the host by default) and the subject.",
        options: [
            .integer("partitions", \.partitions, in: 1...1_000_000, "Number of partitions."),
            .template("key", \.key, "What is hashed."),
            .choice("hash", \.hash, "`crc32` (CRC-32/IEEE, as zlib and Go compute it) or `fnv1a` (32-bit)."),
            .template("subject", \.subject, "Subject template; inserted values are made subject-safe."),
            .choice(
                "host", \.host,
                "Where the host comes from: `auto` (a `host` field, else the line's host field, else the record's host), `line` (`unknown` without one), `record`."
            ),
        ]
    ) { settings, _ in
        PartitionTransform(options: settings)
    }

    public var producedFields: Set<String> { [] }

    public var templates: [(option: String, template: Template)] {
        [("key", options.key), ("subject", options.subject)]
    }

    /// The partition of a (sanitized) host, as this stage computes it with the default key.
    public func partition(ofHost host: String) -> Int {
        Int(options.hash.hash(host.utf8) % UInt32(options.partitions))
    }

    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        // Hosts repeat: the safe host, its partition and (for templates of
        // host and partition only) the subject are computed once per raw host.
        var cache = HostCache(capacity: 4096)
        for await var batch in input {
            for index in batch.records.indices {
                assign(&batch.records[index], cache: &cache)
            }
            try await output.send(batch)
        }
    }

    public func transform(_ batch: inout Batch) throws {
        var cache = HostCache(capacity: 0)
        for index in batch.records.indices {
            assign(&batch.records[index], cache: &cache)
        }
    }

    @inline(__always)
    func assign(_ record: inout Record, cache: inout HostCache) {
        let cacheable = keyIsHost && subjectDependsOnHostOnly
        // The hit path reads the record in place and copies the cached
        // strings straight into it: passing the record or an entry by value
        // copied it (a retain and a release per field).
        if cacheable, let slot = withRawHost(&record, { cache.lookup($0) }) {
            cache.assign(slot, to: &record)
            return
        }
        let raw: [UInt8] = withRawHost(&record) { Array($0) }
        var resolved = record
        resolved.host = raw.withUnsafeBytes { HostName.sanitize($0) }
        let key = keyIsHost ? resolved.host : options.key.render(resolved)
        resolved.partition = Int(options.hash.hash(key.utf8) % UInt32(options.partitions))
        let subject = options.subject.render(resolved) { HostName.sanitize($0) }
        if cacheable {
            raw.withUnsafeBytes {
                cache.store($0, HostCache.Entry(host: resolved.host, partition: resolved.partition!, subject: subject))
            }
        }
        record.host = resolved.host
        record.partition = resolved.partition
        record.subject = cacheable ? subject : options.subject.render(record) { HostName.sanitize($0) }
    }

    /// The raw (unsanitised) host of `record`, read in place.
    @inline(__always)
    func withRawHost<Result>(_ record: inout Record, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        switch options.host {
        case .record:
            return record.host.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        case .line:
            return record.bytes.withUnsafeReadableBytes { bytes in body(HostName.fromLine(bytes) ?? empty) }
        case .auto:
            if var captured = record.fields["host"] {
                return captured.withUTF8 { body(UnsafeRawBufferPointer($0)) }
            }
            let found: Result? = record.bytes.withUnsafeReadableBytes { bytes in
                HostName.fromLine(bytes).map(body)
            }
            if let found { return found }
            return record.host.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
    }
}

/// Raw host bytes → safe host, partition, subject: a direct-mapped table
/// (slot = FNV-1a of the raw bytes), so a lookup is one hash, one compare
/// in place and no allocation or reference count; a colliding host simply
/// replaces the slot. Raw hosts longer than ``maxKeyBytes`` are not cached.
struct HostCache {
    struct Entry {
        var host: String
        var partition: Int
        var subject: String
    }

    static let maxKeyBytes = 64

    /// Per slot: the hash (0: empty), the raw key's length and bytes, the entry.
    private var hashes: [UInt64]
    private var lengths: [Int]
    private var keys: [UInt8]
    private var entries: [Entry?]
    private let mask: Int

    /// A cache of `capacity` slots (rounded up to a power of two); 0 turns it off.
    init(capacity: Int) {
        var size = 1
        while size < capacity { size <<= 1 }
        let count = capacity > 0 ? size : 0
        hashes = Array(repeating: 0, count: count)
        lengths = Array(repeating: 0, count: count)
        keys = Array(repeating: 0, count: count * Self.maxKeyBytes)
        entries = Array(repeating: nil, count: count)
        mask = size - 1
    }

    @inline(__always)
    static func hash(_ raw: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in raw { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash | 1  // never 0, the empty slot's mark
    }

    /// The slot holding `raw`, if any.
    @inline(__always)
    func lookup(_ raw: UnsafeRawBufferPointer) -> Int? {
        guard !hashes.isEmpty, raw.count <= Self.maxKeyBytes else { return nil }
        let hash = Self.hash(raw)
        let slot = Int(truncatingIfNeeded: hash) & mask
        guard hashes[slot] == hash, lengths[slot] == raw.count else { return nil }
        let equal = keys.withUnsafeBytes { stored in
            raw.count == 0 || memcmp(stored.baseAddress! + slot * Self.maxKeyBytes, raw.baseAddress!, raw.count) == 0
        }
        return equal ? slot : nil
    }

    /// Sets the host, partition and subject of `record` from `slot`.
    @inline(__always)
    func assign(_ slot: Int, to record: inout Record) {
        entries.withUnsafeBufferPointer { entries in
            record.host = entries[slot].unsafelyUnwrapped.host
            record.partition = entries[slot].unsafelyUnwrapped.partition
            record.subject = entries[slot].unsafelyUnwrapped.subject
        }
    }

    mutating func store(_ raw: UnsafeRawBufferPointer, _ entry: Entry) {
        guard !hashes.isEmpty, raw.count <= Self.maxKeyBytes else { return }
        let hash = Self.hash(raw)
        let slot = Int(truncatingIfNeeded: hash) & mask
        hashes[slot] = hash
        lengths[slot] = raw.count
        keys.withUnsafeMutableBytes { stored in
            if raw.count > 0 {
                (stored.baseAddress! + slot * Self.maxKeyBytes).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
            }
        }
        entries[slot] = entry
    }
}
