import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes each record as a line to standard output.
///
/// Records are acknowledged once `write` returned. If standard output is
/// closed (the reader of the pipe went away) the stage fails with a clear
/// error rather than discarding records.
public struct StdoutSink: Sink {
    let fileDescriptor: Int32

    /// Creates a sink writing to `fileDescriptor` (standard output by default).
    public init(fileDescriptor: Int32 = 1) {
        self.fileDescriptor = fileDescriptor
    }

    static let definition = StageDefinition.sink(
        "stdout",
        summary: "Writes each record as a line to standard output.",
        options: []
    ) { _ in StdoutSink() }

    public func run(input: BatchInput, context: StageContext) async throws {
        let fd = fileDescriptor
        for await batch in input {
            var buffer = ByteBuffer()
            buffer.writeLines(batch.records)
            let bytes = buffer
            let failure: Int32? = try await BlockingIO.run {
                bytes.withUnsafeReadableBytes { FileIO.writeAll(fd, $0).errno }
            }
            if let failure {
                throw SystemCallError(call: "write", target: fd == 1 ? "stdout" : "fd \(fd)", code: failure)
            }
            batch.acknowledge()
            context.metrics.recordsDelivered.add(batch.count, ordering: .relaxed)
        }
    }
}
