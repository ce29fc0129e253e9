import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A point in wall-clock time, in nanoseconds since the Unix epoch.
public struct Timestamp: Sendable, Hashable, Comparable {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    public var nanosecondsSinceEpoch: Int64

    /// Creates a timestamp from nanoseconds since the Unix epoch.
    public init(nanosecondsSinceEpoch: Int64) {
        self.nanosecondsSinceEpoch = nanosecondsSinceEpoch
    }

    /// The current wall-clock time.
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(nanosecondsSinceEpoch: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch
    }
}

/// The severity of a log line, ordered from most to least severe (syslog order).
public enum Severity: Int, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    case emergency = 0
    case alert = 1
    case critical = 2
    case error = 3
    case warning = 4
    case notice = 5
    case info = 6
    case debug = 7
    case trace = 8

    /// Lower raw values are more severe; `a < b` means `a` is more severe than `b`.
    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The lower-case name used in templates and pipeline files.
    public var description: String {
        switch self {
        case .emergency: "emergency"
        case .alert: "alert"
        case .critical: "critical"
        case .error: "error"
        case .warning: "warning"
        case .notice: "notice"
        case .info: "info"
        case .debug: "debug"
        case .trace: "trace"
        }
    }
}

/// One log line moving through a pipeline, with what stages learned about it.
///
/// ``bytes`` holds the line exactly as read, without its line terminator (`\n`);
/// a `\r` before the `\n` is kept unless the source was asked to strip it.
/// Nothing decodes the bytes unless a stage needs to, so invalid UTF-8 passes
/// through untouched. Sources slice many records out of one shared buffer, so a
/// record costs no heap allocation of its own.
public struct Record: Sendable {
    /// The line's bytes as read, without the trailing newline.
    public var bytes: ByteBuffer
    /// The name of the source stage that produced the record.
    public var source: String
    /// Where the line came from: a file path, a subject, `stdin`.
    public var origin: String
    /// The host the line is about (the machine's own name for local sources).
    public var host: String
    /// When the source read the line.
    public var receivedAt: Timestamp
    /// The severity, when a stage recognised one.
    public var severity: Severity?
    /// The partition, once a partitioner assigned one.
    public var partition: Int?
    /// The subject to publish on, once a stage chose one.
    public var subject: String?
    /// Byte offset of the line in its origin, where the source knows it.
    public var offset: Int64?
    /// Identifies the byte stream `offset` counts in, stable across restarts
    /// (a file's fingerprint); with the source name and offset it names the
    /// line uniquely, e.g. for de-duplicating replays.
    public var streamID: String?
    /// Offsets in `streamID` at or below this will not be delivered again
    /// (a JetStream consumer's acknowledgement floor), so bookkeeping of
    /// what was written (the file sink's `exactly_once` ledger) may forget them.
    public var offsetFloor: Int64?
    /// Named fields (for example named regex captures), usable in templates.
    public var fields: [String: String]
    /// Which acknowledgement token and slot this record reports to.
    @usableFromInline
    internal var acknowledgement: AcknowledgementSlot?

    /// Creates a record.
    public init(
        bytes: ByteBuffer,
        source: String,
        origin: String,
        host: String,
        receivedAt: Timestamp,
        severity: Severity? = nil,
        partition: Int? = nil,
        subject: String? = nil,
        offset: Int64? = nil,
        streamID: String? = nil,
        fields: [String: String] = [:]
    ) {
        self.bytes = bytes
        self.source = source
        self.origin = origin
        self.host = host
        self.receivedAt = receivedAt
        self.severity = severity
        self.partition = partition
        self.subject = subject
        self.offset = offset
        self.streamID = streamID
        self.fields = fields
        self.acknowledgement = nil
    }

    /// The line decoded as UTF-8, with invalid sequences replaced by U+FFFD.
    /// Meant for tests and diagnostics, not the hot path.
    public var text: String { String(decoding: bytes.readableBytesView, as: UTF8.self) }
}
