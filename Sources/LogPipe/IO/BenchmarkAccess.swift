import NIOCore

/// Entry points for the micro benchmarks in `Benchmarks/` (not API: the
/// names may change with any release).
@_spi(Benchmarks)
public enum BenchmarkAccess {
    /// The line splitter the file and stdin sources use.
    public struct LineSplitter {
        var splitter: LogPipe.LineSplitter

        public init(maxLineBytes: Int) {
            splitter = LogPipe.LineSplitter(maxLineBytes: maxLineBytes, oversize: .split, stripCarriageReturn: false)
        }

        /// Emits every complete line of `buffer` as a slice of it.
        public mutating func consume(_ buffer: ByteBuffer, emit: (ByteBuffer) -> Void) {
            splitter.consume(buffer) { line, _ in emit(line) }
        }
    }
}
