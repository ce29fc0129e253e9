import NIOCore

/// A source fed by an application's own `AsyncSequence` of lines.
///
/// The sequence is read as the pipeline accepts records (a slow pipeline
/// stops the iteration), and lines that arrive together are emitted as one
/// batch. The source finishes when the sequence ends; on shutdown it emits
/// the lines it already took and stops reading the sequence.
///
/// ```swift
/// let (lines, continuation) = AsyncStream.makeStream(of: String.self)
/// try pipeline.add("app", source: AsyncSequenceSource(lines: lines))
/// ```
public struct AsyncSequenceSource<Lines: AsyncSequence & Sendable>: Source where Lines.Element: Sendable {
    let lines: Lines
    let bytes: @Sendable (Lines.Element) -> ByteBuffer
    let host: String?
    let maxBatch: Int
    let onAcknowledged: AcknowledgementToken.Handler?

    /// Creates a source from a sequence of `String` lines.
    /// - Parameters:
    ///   - lines: the lines, one record each.
    ///   - host: host of the records (default: this machine's name).
    ///   - maxBatch: most lines per batch.
    ///   - onAcknowledged: told which lines every sink is done with.
    public init(
        lines: Lines, host: String? = nil, maxBatch: Int = 1000, onAcknowledged: AcknowledgementToken.Handler? = nil
    )
    where Lines.Element == String {
        self.lines = lines
        self.bytes = { ByteBuffer(string: $0) }
        self.host = host
        self.maxBatch = maxBatch
        self.onAcknowledged = onAcknowledged
    }

    /// Creates a source from a sequence of byte lines.
    public init(
        byteLines lines: Lines, host: String? = nil, maxBatch: Int = 1000,
        onAcknowledged: AcknowledgementToken.Handler? = nil
    )
    where Lines.Element == [UInt8] {
        self.lines = lines
        self.bytes = { ByteBuffer(bytes: $0) }
        self.host = host
        self.maxBatch = maxBatch
        self.onAcknowledged = onAcknowledged
    }

    public func run(_ context: SourceContext) async throws {
        // One task reads the sequence into a small bounded queue; this task
        // takes whatever is queued as one batch. The queue's bound is what
        // stops the iteration when the pipeline is slow.
        let queue = BoundedChannel<Record>(capacity: maxBatch)
        let host = host ?? context.stage.hostname
        let name = context.name
        let bytes = self.bytes
        let lines = self.lines
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { queue.finishProducer() }
                for try await line in lines {
                    try await queue.send(
                        Record(bytes: bytes(line), source: name, origin: "app", host: host, receivedAt: .now())
                    )
                }
            }
            group.addTask {
                // On shutdown, stop waiting for the app's next line: ending
                // the queue lets the loop below emit what is queued and return.
                await context.waitForStop()
                if context.isStopping { queue.finishProducer() }
            }
            while let first = await queue.receive() {
                var records = [first]
                while records.count < maxBatch, queue.bufferedCount > 0, let next = await queue.receive() {
                    records.append(next)
                }
                try await context.emit(records, onAcknowledged: onAcknowledged)
                if context.isStopping { break }
            }
            group.cancelAll()
        }
    }
}

extension AsyncSequenceSource: FieldProducer {
    /// App-fed lines carry no fields.
    public var producedFields: Set<String> { [] }
}
