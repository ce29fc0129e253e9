import NIOCore

/// Generates realistic log lines from several fake hosts, at a set rate or as
/// fast as the pipeline takes them: sample data for demos, tests and
/// benchmarks, with no files needed.
///
/// Lines mix RFC 3164 syslog, JSON, logfmt and plain application formats;
/// about 2 % are errors, 8 % warnings, 60 % info and 30 % debug. The same
/// `seed` produces the same lines (apart from their timestamps).
public struct DemoLogsSource: Source {
    /// The line formats the source can produce.
    public enum Format: String, Sendable, CaseIterable {
        case mixed, syslog, json, logfmt, plain
    }

    /// What and how much to generate.
    public struct Options: StageSettings {
        /// Lines to produce before finishing; 0 means until stopped.
        public var count = 1000
        /// Lines per second; 0 means as fast as the pipeline accepts.
        public var rate = 0
        /// Number of fake hosts.
        public var hosts = 8
        /// Line format.
        public var format: Format = .mixed
        /// Seed of the pseudo-random generator.
        public var seed: UInt64 = 1
        /// Lines per batch.
        public var batchSize = 500

        /// Default options.
        public init() {}

        /// The seed as the pipeline file gives it.
        var seedOption: Int {
            get { Int(truncatingIfNeeded: seed) }
            set { seed = UInt64(newValue) }
        }
    }

    let options: Options

    /// Creates a demo source.
    public init(options: Options = Options()) {
        self.options = options
    }

    static let definition = StageDefinition.source(
        "demo_logs",
        summary: "Generates realistic log lines from several fake hosts (syslog, JSON, logfmt, plain).",
        options: [
            .integer(
                "count", \.count, in: 0...Int.max, "Lines to produce before finishing; 0 runs until stopped."),
            .integer("rate", \.rate, in: 0...Int.max, "Lines per second; 0 is as fast as the pipeline accepts."),
            .integer("hosts", \.hosts, in: 1...10000, "Number of fake hosts the lines come from."),
            .choice("format", \.format, "Line format."),
            .integer(
                "seed", \.seedOption, in: 0...Int.max, "Seed; the same seed gives the same lines (timestamps aside)."
            ),
            .integer("batch_size", \.batchSize, in: 1...100_000, "Lines per batch."),
        ]
    ) { settings, _ in
        DemoLogsSource(options: settings)
    }

    /// The fake host names, in order.
    public static func hostNames(count: Int) -> [String] {
        let roles = ["web", "api", "db", "cache", "worker", "lb", "mail", "vpn"]
        return (0..<count).map { index in
            let role = roles[index % roles.count]
            let number = index / roles.count + 1
            let name = "\(role)-\(number < 10 ? "0" : "")\(number)"
            return role == "db" || role == "lb" ? name + ".prod.example.com" : name
        }
    }

    public func run(_ context: SourceContext) async throws {
        var random = SplitMix64(seed: options.seed)
        let hosts = Self.hostNames(count: options.hosts)
        let clock = ContinuousClock()
        let start = clock.now
        var produced = 0
        let perBatch = options.rate > 0 ? max(1, min(options.batchSize, options.rate / 10)) : options.batchSize
        while !context.isStopping {
            let remaining = options.count > 0 ? options.count - produced : perBatch
            if remaining <= 0 { break }
            let size = min(perBatch, remaining)
            if options.rate > 0 {
                let due = start + .nanoseconds(Int64(Double(produced) / Double(options.rate) * 1e9))
                if due > clock.now {
                    try? await Task.sleep(until: due, clock: clock)
                    if context.isStopping { break }
                }
            }
            let now = Timestamp.now()
            var buffer = ByteBufferAllocator().buffer(capacity: size * 160)
            var records: [Record] = []
            records.reserveCapacity(size)
            for _ in 0..<size {
                let host = hosts[Int(random.next() % UInt64(hosts.count))]
                let begin = buffer.writerIndex
                LineGenerator.write(into: &buffer, host: host, time: now, format: options.format, random: &random)
                let line = buffer.getSlice(at: begin, length: buffer.writerIndex - begin)!
                records.append(
                    Record(bytes: line, source: context.name, origin: "demo_logs", host: host, receivedAt: now))
            }
            produced += size
            try await context.emit(records)
        }
    }
}

/// A small, fast, deterministic pseudo-random generator.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum LineGenerator {
    private static let messages: [(Severity, [String])] = [
        (
            .error,
            [
                "Failed to process order #: upstream timeout after # ms",
                "connection to 10.0.@.@ refused, giving up after # retries",
                "could not serialize access due to concurrent update (txn #)",
            ]
        ),
        (
            .warning,
            [
                "slow query (# ms): SELECT * FROM orders WHERE customer_id = #",
                "pool near capacity: #/512 connections in use",
                "retrying request # (attempt #/5) after 503 from payments",
            ]
        ),
        (
            .info,
            [
                "request # completed status=200 bytes=# duration=#ms",
                "user alice logged in from 203.0.113.@ session=#",
                "job sync-inventory finished: processed=# skipped=#",
                "health check ok latency=#ms",
            ]
        ),
        (
            .debug,
            [
                "cache lookup key=user:# hit=#",
                "sending heartbeat seq=# to kafka-#:9092",
                "parsed # bytes of request body for trace #",
            ]
        ),
    ]
    private static let programs = ["nginx", "app", "postgres", "sshd", "worker", "cron"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func write(
        into buffer: inout ByteBuffer, host: String, time: Timestamp, format: DemoLogsSource.Format,
        random: inout SplitMix64
    ) {
        let roll = random.next() % 100
        let severity: Severity = roll < 2 ? .error : roll < 10 ? .warning : roll < 70 ? .info : .debug
        let templates = messages.first { $0.0 == severity }!.1
        let template = templates[Int(random.next() % UInt64(templates.count))]
        var message = ""
        for character in template {
            switch character {
            case "#": message += String(random.next() % 10_000)
            case "@": message += String(random.next() % 256)  // an address octet
            default: message.append(character)
            }
        }
        let chosen: DemoLogsSource.Format
        if format == .mixed {
            chosen = [.syslog, .json, .logfmt, .plain][Int(random.next() % 4)]
        } else {
            chosen = format
        }
        let civil = CivilTime(time)
        let word = levelWord(severity)
        switch chosen {
        case .syslog, .mixed:
            let program = programs[Int(random.next() % UInt64(programs.count))]
            let priority = 8 + severity.rawValue  // facility user
            buffer.writeString(
                "<\(priority)>\(months[civil.month - 1]) \(civil.day < 10 ? " " : "")\(civil.day) \(civil.clock) \(host) \(program)[\(1000 + random.next() % 9000)]: \(word): \(message)"
            )
        case .json:
            let escaped = message.replacingQuotes()
            buffer.writeString(
                #"{"ts":"\#(civil.iso8601)","host":"\#(host)","level":"\#(severity == .warning ? "warn" : severity.description)","msg":"\#(escaped)"}"#
            )
        case .logfmt:
            buffer.writeString(
                "ts=\(civil.iso8601) host=\(host) level=\(severity == .warning ? "warn" : severity.description) msg=\"\(message.replacingQuotes())\""
            )
        case .plain:
            buffer.writeString("\(civil.date) \(civil.clock).\(civil.milliseconds) \(word) [\(host)] \(message)")
        }
    }

    private static func levelWord(_ severity: Severity) -> String {
        switch severity {
        case .error: "ERROR"
        case .warning: "WARN"
        case .info: "INFO"
        default: "DEBUG"
        }
    }
}

extension String {
    fileprivate func replacingQuotes() -> String {
        guard contains("\"") else { return self }
        return String(flatMap { $0 == "\"" ? ["\\", "\""] : [$0] })
    }
}

extension DemoLogsSource: FieldProducer {
    /// Generated lines carry no fields.
    public var producedFields: Set<String> { [] }
}
