import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What to do with a line longer than the configured maximum.
public enum OversizePolicy: String, Sendable, CaseIterable {
    /// Emit the line in pieces of at most the maximum size, each as a record.
    case split
    /// Emit the first maximum-size bytes as a record and skip the rest.
    case truncate
}

/// Splits a byte stream into lines without copying them.
///
/// The reader asks for a buffer with ``makeReadBuffer(capacity:)`` (it starts
/// with the unfinished line of the previous read), reads into it, and passes
/// it to ``consume(_:emit:)``, which hands out every complete line as a slice
/// of that buffer: no allocation or copy per line. Lines end at `\n`, which is
/// not part of the line; `\r` before it is kept unless `stripCarriageReturn`.
/// A line longer than `maxLineBytes` is split or truncated, never buffered
/// without bound.
struct LineSplitter {
    let maxLineBytes: Int
    let oversize: OversizePolicy
    let stripCarriageReturn: Bool
    /// Bytes of an unfinished line (a slice of the previous buffer).
    private var carry: ByteBuffer?
    /// In truncate mode: the rest of an overlong line is being skipped.
    private var discarding = false
    /// Stream offset of the first byte of `carry` (or of the next line).
    private(set) var lineStartOffset: Int64
    /// Lines that were split or truncated.
    private(set) var oversizeLines = 0
    /// The current line was already counted in `oversizeLines`.
    private var currentLineCounted = false

    init(maxLineBytes: Int, oversize: OversizePolicy, stripCarriageReturn: Bool, startOffset: Int64 = 0) {
        precondition(maxLineBytes > 0)
        self.maxLineBytes = maxLineBytes
        self.oversize = oversize
        self.stripCarriageReturn = stripCarriageReturn
        self.lineStartOffset = startOffset
    }

    /// A buffer holding the unfinished line, with room for `capacity` more bytes.
    mutating func makeReadBuffer(capacity: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: capacity + (carry?.readableBytes ?? 0))
        // The carry stays until `consume` replaces it, so that `finish` can
        // still emit it if the read hits end of file.
        if let carry {
            buffer.writeImmutableBuffer(carry)
        }
        return buffer
    }

    /// Emits every complete line in `buffer` (which must come from
    /// ``makeReadBuffer(capacity:allocator:)``), with the stream offset of its
    /// first byte, and keeps the unfinished tail for the next read.
    mutating func consume(_ buffer: ByteBuffer, emit: (ByteBuffer, Int64) -> Void) {
        consumeSpans(buffer) { start, length, offset in emit(buffer.getSlice(at: start, length: length)!, offset) }
    }

    /// Like ``consume(_:emit:)``, but hands out each line as its position in
    /// `buffer` (index, length, stream offset), so that a caller can build
    /// its records in place without holding a slice per line meanwhile.
    mutating func consumeSpans(_ buffer: ByteBuffer, emit: (Int, Int, Int64) -> Void) {
        var start = buffer.readerIndex
        let end = buffer.writerIndex
        var cursor = start
        buffer.withUnsafeReadableBytes { raw in
            let base = raw.baseAddress!
            let origin = buffer.readerIndex
            while cursor < end {
                let remaining = end - cursor
                let found = memchr(base + (cursor - origin), 0x0A, remaining)
                guard let found else { break }
                let newline = origin + (UnsafeRawPointer(found) - UnsafeRawPointer(base))
                emitLine(buffer, from: start, to: newline, emit: emit)
                lineStartOffset += Int64(newline + 1 - start)
                discarding = false
                currentLineCounted = false
                start = newline + 1
                cursor = start
            }
        }
        // The tail has no newline yet. A piece is cut from it only while
        // more than `maxLineBytes` wait: a line of exactly N × maxLineBytes
        // keeps its last piece until its newline, so it makes N records (no
        // empty one after the newline) and one of exactly maxLineBytes is
        // not oversize at all. With `stripCarriageReturn` one byte more
        // waits: it may be the `\r` of a CRLF.
        let held = maxLineBytes + (stripCarriageReturn ? 1 : 0)
        var tailStart = start
        while end - tailStart > held || (discarding && end > tailStart) {
            if discarding {
                lineStartOffset += Int64(end - tailStart)
                tailStart = end
                break
            }
            emit(tailStart, maxLineBytes, lineStartOffset)
            countOversize()
            lineStartOffset += Int64(maxLineBytes)
            tailStart += maxLineBytes
            if oversize == .truncate { discarding = true }
        }
        carry = tailStart < end ? buffer.getSlice(at: tailStart, length: end - tailStart) : nil
    }

    /// Emits the last line if the stream ended without a newline.
    mutating func finish(emit: (ByteBuffer, Int64) -> Void) {
        if let carry, carry.readableBytes > 0, !discarding {
            emitLine(carry, from: carry.readerIndex, to: carry.writerIndex) { start, length, offset in
                emit(carry.getSlice(at: start, length: length)!, offset)
            }
            lineStartOffset += Int64(carry.readableBytes)
        }
        carry = nil
        discarding = false
        currentLineCounted = false
    }

    private mutating func countOversize() {
        if !currentLineCounted {
            oversizeLines += 1
            currentLineCounted = true
        }
    }

    /// Bytes of the unfinished line held back.
    var pendingBytes: Int { carry?.readableBytes ?? 0 }

    private mutating func emitLine(
        _ buffer: ByteBuffer, from start: Int, to end: Int, emit: (Int, Int, Int64) -> Void
    ) {
        if discarding { return }
        var lineEnd = end
        if stripCarriageReturn, lineEnd > start, buffer.getInteger(at: lineEnd - 1, as: UInt8.self) == 0x0D {
            lineEnd -= 1
        }
        var offset = lineStartOffset
        var pieceStart = start
        while lineEnd - pieceStart > maxLineBytes {
            emit(pieceStart, maxLineBytes, offset)
            countOversize()
            if oversize == .truncate { return }
            pieceStart += maxLineBytes
            offset += Int64(maxLineBytes)
        }
        emit(pieceStart, lineEnd - pieceStart, offset)
    }
}

/// The line-splitting options shared by line-reading sources (`stdin`, `file`).
/// Settings of a stage that splits a byte stream into lines (`file`,
/// `stdin`).
protocol LineHandlingSettings: StageSettings {
    /// Longest line emitted as one record.
    var maxLineBytes: Int { get set }
    /// What to do with a longer line.
    var oversize: OversizePolicy { get set }
    /// Drop a `\r` that ends a line.
    var stripCarriageReturn: Bool { get set }
    /// Host of the records; the machine's name when `nil`.
    var host: String? { get set }
}

enum LineOptions {
    /// The options of line handling, declared once for every stage that
    /// splits lines.
    static func options<Settings: LineHandlingSettings>(for _: Settings.Type) -> [StageOption<Settings>] {
        [
            .size(
                "max_line_bytes", \Settings.maxLineBytes, minimum: 1,
                "Longest line emitted as one record; longer lines follow `oversize`."),
            .choice(
                "oversize", \Settings.oversize,
                "Split an overlong line into several records, or truncate it (counted as `oversize_lines`)."),
            .boolean("strip_cr", \Settings.stripCarriageReturn, "Remove a `\\r` before the `\\n` (CRLF input)."),
            .string("host", \Settings.host, "Host of the records (default: this machine's host name)."),
        ]
    }
}
