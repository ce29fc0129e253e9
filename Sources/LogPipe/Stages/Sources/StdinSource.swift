import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads lines from standard input (or any readable file descriptor) until
/// end of file.
///
/// Lines are split on `\n`; a last line without a newline still counts; `\r`
/// before `\n` is kept unless ``Options/stripCarriageReturn`` is set, so
/// `stdin → file` reproduces its input byte for byte. Bytes are never
/// decoded. The source reads one chunk, emits it, and only then reads the
/// next, so a slow pipeline makes the writer on the other end of the pipe
/// block.
public struct StdinSource: Source {
    /// How the source reads and splits.
    public struct Options: LineHandlingSettings {
        /// Longest line emitted as one record.
        public var maxLineBytes: Int = 1024 * 1024
        /// What to do with a longer line.
        public var oversize: OversizePolicy = .split
        /// Drop a `\r` that ends a line.
        public var stripCarriageReturn = false
        /// Bytes per read (and so, roughly, per batch).
        public var readBytes: Int = 256 * 1024
        /// Host of the records; the machine's name when `nil`.
        public var host: String?

        /// Default options.
        public init() {}
    }

    let options: Options
    let fileDescriptor: Int32

    /// Creates a source reading `fileDescriptor` (standard input by default).
    public init(options: Options = Options(), fileDescriptor: Int32 = 0) {
        self.options = options
        self.fileDescriptor = fileDescriptor
    }

    static let definition = StageDefinition.source(
        "stdin",
        summary: "Reads lines from standard input until end of file.",
        options: LineOptions.options(for: Options.self)
            + [.size("read_bytes", \.readBytes, minimum: 1, "Bytes read at a time; one read becomes one batch.")]
    ) { settings, _ in
        StdinSource(options: settings)
    }

    public func run(_ context: SourceContext) async throws {
        var splitter = LineSplitter(
            maxLineBytes: options.maxLineBytes,
            oversize: options.oversize,
            stripCarriageReturn: options.stripCarriageReturn
        )
        let host = options.host ?? context.stage.hostname
        let name = context.name
        let origin = fileDescriptor == 0 ? "stdin" : "fd:\(fileDescriptor)"
        let reader = PollingReader(fileDescriptor: fileDescriptor)
        var reportedOversize = 0
        var records: [Record] = []
        var spans: [LineSpan] = []

        // `records` is passed in, not captured: a captured array is boxed,
        // and appending to it copied each record (a retain per field).
        func flush(_ records: inout [Record]) async throws {
            if splitter.oversizeLines > reportedOversize {
                context.metrics.count("oversize_lines", by: splitter.oversizeLines - reportedOversize)
                if reportedOversize == 0 {
                    context.logger.warning(
                        "a line is longer than max_line_bytes (\(options.maxLineBytes)); it was \(options.oversize == .split ? "split" : "truncated") (counted as oversize_lines)"
                    )
                }
                reportedOversize = splitter.oversizeLines
            }
            guard !records.isEmpty else { return }
            let batch = records
            records = []
            try await context.emit(batch)
        }

        reading: while !context.isStopping {
            let buffer = splitter.makeReadBuffer(capacity: options.readBytes)
            switch try await reader.read(into: buffer, stop: { context.isStopping }) {
            case .data(let filled):
                let now = Timestamp.now()
                // Lines are found first, then the records are made in one
                // pass into an array of the right size (no growth, no spare
                // capacity held by the batch).
                spans.removeAll(keepingCapacity: true)
                splitter.consumeSpans(filled) { start, length, offset in
                    spans.append(LineSpan(start: start, length: length, offset: offset))
                }
                records = LineSpan.records(
                    spans, in: filled, source: name, origin: origin, host: host, receivedAt: now)
                try await flush(&records)
            case .endOfFile, .stopped:
                break reading
            }
        }
        // End of input or shutdown: a last line without newline is emitted
        // rather than lost.
        let now = Timestamp.now()
        splitter.finish { line, offset in
            records.append(
                Record(bytes: line, source: name, origin: origin, host: host, receivedAt: now, offset: offset))
        }
        try await flush(&records)
    }
}

/// Where a line lies in a read buffer.
struct LineSpan {
    var start: Int
    var length: Int
    var offset: Int64

    /// One record per span, sliced from `buffer`. Each record starts as a
    /// copy of one prototype and gets its bytes and offset in its slot:
    /// made with `Record.init` in the loop, every record was built in a
    /// temporary, copied into the array and the temporary destroyed (a
    /// retain and a release per field and record).
    @inline(never)
    static func records(
        _ spans: [LineSpan], in buffer: ByteBuffer, source: String, origin: String, host: String,
        receivedAt: Timestamp
    ) -> [Record] {
        let prototype = Record(
            bytes: buffer, source: source, origin: origin, host: host, receivedAt: receivedAt)
        return [Record](unsafeUninitializedCapacity: spans.count) { slots, count in
            for index in spans.indices {
                let span = spans[index]
                let slot = slots.baseAddress! + index
                slot.initialize(to: prototype)
                slot.pointee.bytes = buffer.getSlice(at: span.start, length: span.length)!
                slot.pointee.offset = span.offset
            }
            count = spans.count
        }
    }
}

extension StdinSource: FieldProducer {
    /// Standard input sets no fields.
    public var producedFields: Set<String> { [] }
}
