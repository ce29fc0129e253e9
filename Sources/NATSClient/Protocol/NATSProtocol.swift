import NIOCore

/// NATS message headers: an optional status line (`NATS/1.0 503`) and
/// name/value pairs, in order; a name may repeat.
public struct NATSHeaders: Sendable, Hashable {
    /// The status code of a status message (`503`, `404`, `408`, `409`, `100`).
    public var status: Int?
    /// The text after the status code (`No Messages`).
    public var statusDescription: String?
    /// The headers in order.
    public var fields: [(name: String, value: String)] {
        get { storage.map { ($0.name, $0.value) } }
        set { storage = newValue.map { Field(name: $0.name, value: $0.value) } }
    }

    struct Field: Sendable, Hashable {
        var name: String
        var value: String
    }

    var storage: [Field] = []

    /// Empty headers.
    public init() {}

    /// Headers with the given fields.
    public init(_ fields: [(String, String)]) {
        storage = fields.map { Field(name: $0.0, value: $0.1) }
    }

    /// The first value of `name` (header names compare case-sensitively, as NATS does).
    public subscript(name: String) -> String? {
        storage.first { $0.name == name }?.value
    }

    /// All values of `name`.
    public func values(_ name: String) -> [String] {
        storage.filter { $0.name == name }.map(\.value)
    }

    /// Appends a header.
    public mutating func append(_ name: String, _ value: String) {
        storage.append(Field(name: name, value: value))
    }

    /// Whether there is neither a status nor a field.
    public var isEmpty: Bool { status == nil && storage.isEmpty }
}

/// A message delivered by the server.
public struct NATSMessage: Sendable {
    /// The subject it was published on.
    public var subject: String
    /// The subscription it was delivered to.
    public var sid: UInt64
    /// The reply subject, if the publisher gave one.
    public var replyTo: String?
    /// The headers, for `HMSG`.
    public var headers: NATSHeaders?
    /// The payload.
    public var payload: ByteBuffer

    /// The status code of a status message (no responders, JetStream flow).
    public var status: Int? { headers?.status }
}

/// What the server sends.
enum ServerOperation: Sendable {
    case info(ByteBuffer)
    case message(NATSMessage)
    case ping
    case pong
    case ok
    case error(String)
}

/// Malformed input from the server.
public struct NATSProtocolError: Error, CustomStringConvertible {
    public var description: String
}

/// An incremental parser for the server side of the protocol, over a NIO
/// cumulation buffer: it never copies into `Data` and never re-scans a
/// control line it already parsed (a message whose payload is incomplete
/// keeps its parsed header until the rest arrives).
struct NATSDecoder: ByteToMessageDecoder {
    typealias InboundOut = ServerOperation

    static let maxControlLine = 4096

    private struct PendingMessage {
        var subject: String
        var sid: UInt64
        var replyTo: String?
        var headerBytes: Int
        var totalBytes: Int
    }

    private var pending: PendingMessage?

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let operation = try next(&buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(operation))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        while let operation = try next(&buffer) {
            context.fireChannelRead(Self.wrapInboundOut(operation))
        }
        return .needMoreData
    }

    /// The next complete operation in `buffer`, consuming it; `nil` if more
    /// bytes are needed.
    mutating func next(_ buffer: inout ByteBuffer) throws -> ServerOperation? {
        if let message = pending {
            // Payload plus its trailing CRLF.
            guard buffer.readableBytes >= message.totalBytes + 2 else { return nil }
            pending = nil
            return .message(try readPayload(message, from: &buffer))
        }
        guard let lineEnd = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > Self.maxControlLine {
                throw NATSProtocolError(
                    description: "server sent a control line longer than \(Self.maxControlLine) bytes")
            }
            return nil
        }
        let lineLength = lineEnd - buffer.readerIndex
        var contentLength = lineLength
        if contentLength > 0, buffer.getInteger(at: lineEnd - 1, as: UInt8.self) == UInt8(ascii: "\r") {
            contentLength -= 1
        }
        let line = buffer.getSlice(at: buffer.readerIndex, length: contentLength)!
        buffer.moveReaderIndex(forwardBy: lineLength + 1)
        return try parseControlLine(line, buffer: &buffer)
    }

    private mutating func parseControlLine(_ line: ByteBuffer, buffer: inout ByteBuffer) throws -> ServerOperation? {
        // MSG/HMSG (nearly everything the server sends) are read straight
        // from the bytes: fields found by one scan, numbers parsed in place.
        if let message = try line.withUnsafeReadableBytes({ try Self.parseMessageLine($0) }) {
            guard buffer.readableBytes >= message.totalBytes + 2 else {
                pending = message
                return nil
            }
            return .message(try readPayload(message, from: &buffer))
        }
        let bytes = line.readableBytesView
        // The operation name: letters up to the first space or tab.
        let nameEnd = bytes.firstIndex { $0 == 0x20 || $0 == 0x09 } ?? bytes.endIndex
        let name = String(decoding: bytes[bytes.startIndex..<nameEnd], as: UTF8.self).uppercased()
        let argumentsStart = nameEnd
        switch name {
        case "PING": return .ping
        case "PONG": return .pong
        case "+OK": return .ok
        case "-ERR":
            var text = String(decoding: bytes[argumentsStart...], as: UTF8.self).trimmingCharacters(in: " \t")
            if text.hasPrefix("'"), text.hasSuffix("'"), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            return .error(text)
        case "INFO":
            return .info(
                line.getSlice(
                    at: line.readerIndex + argumentsStart - bytes.startIndex, length: bytes.endIndex - argumentsStart)!)
        case "":
            return try next(&buffer)  // an empty line
        default:
            throw NATSProtocolError(
                description: "unknown operation from server: '\(String(decoding: bytes.prefix(64), as: UTF8.self))'")
        }
    }

    /// Parses `MSG <subject> <sid> [reply] <size>` or
    /// `HMSG <subject> <sid> [reply] <header size> <total size>` (any case,
    /// spaces or tabs); `nil` for other operations.
    private static func parseMessageLine(_ bytes: UnsafeRawBufferPointer) throws -> PendingMessage? {
        @inline(__always) func upper(_ byte: UInt8) -> UInt8 { byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
        @inline(__always) func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
        let count = bytes.count
        var position: Int
        let withHeaders: Bool
        if count > 4, upper(bytes[0]) == UInt8(ascii: "M"), upper(bytes[1]) == UInt8(ascii: "S"),
            upper(bytes[2]) == UInt8(ascii: "G"), isSpace(bytes[3])
        {
            withHeaders = false
            position = 3
        } else if count > 5, upper(bytes[0]) == UInt8(ascii: "H"), upper(bytes[1]) == UInt8(ascii: "M"),
            upper(bytes[2]) == UInt8(ascii: "S"), upper(bytes[3]) == UInt8(ascii: "G"), isSpace(bytes[4])
        {
            withHeaders = true
            position = 4
        } else {
            return nil
        }
        // Up to five fields after the name.
        var starts = (0, 0, 0, 0, 0)
        var ends = (0, 0, 0, 0, 0)
        var fields = 0
        while position < count {
            while position < count, isSpace(bytes[position]) { position += 1 }
            guard position < count else { break }
            let start = position
            while position < count, !isSpace(bytes[position]) { position += 1 }
            switch fields {
            case 0: (starts.0, ends.0) = (start, position)
            case 1: (starts.1, ends.1) = (start, position)
            case 2: (starts.2, ends.2) = (start, position)
            case 3: (starts.3, ends.3) = (start, position)
            case 4: (starts.4, ends.4) = (start, position)
            default: break
            }
            fields += 1
        }
        let name = withHeaders ? "HMSG" : "MSG"
        func malformed(_ what: String) -> NATSProtocolError {
            NATSProtocolError(description: "malformed \(name)\(what): '\(String(decoding: bytes, as: UTF8.self))'")
        }
        let minimum = withHeaders ? 4 : 3
        guard fields == minimum || fields == minimum + 1 else { throw malformed("") }
        func field(_ index: Int) -> Range<Int> {
            switch index {
            case 0: starts.0..<ends.0
            case 1: starts.1..<ends.1
            case 2: starts.2..<ends.2
            case 3: starts.3..<ends.3
            default: starts.4..<ends.4
            }
        }
        func number(_ index: Int) -> UInt64? { decimal(UnsafeRawBufferPointer(rebasing: bytes[field(index)])) }
        func text(_ index: Int) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field(index)]), as: UTF8.self)
        }
        guard let sid = number(1) else { throw malformed(" sid") }
        let hasReply = fields == minimum + 1
        let sizesStart = hasReply ? 3 : 2
        guard let total = number(fields - 1).map(Int.init) else { throw malformed(" size") }
        var headerBytes = 0
        if withHeaders {
            guard let size = number(sizesStart).map(Int.init) else { throw malformed(" size") }
            guard size <= total else { throw NATSProtocolError(description: "HMSG header size larger than total size") }
            headerBytes = size
        }
        return PendingMessage(
            subject: text(0), sid: sid, replyTo: hasReply ? text(2) : nil, headerBytes: headerBytes,
            totalBytes: total)
    }

    private func readPayload(_ message: PendingMessage, from buffer: inout ByteBuffer) throws -> NATSMessage {
        var headers: NATSHeaders?
        if message.headerBytes > 0 {
            let block = buffer.readSlice(length: message.headerBytes)!
            headers = try Self.parseHeaders(block)
        }
        let payload = buffer.readSlice(length: message.totalBytes - message.headerBytes)!
        guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\r"),
            buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\n")
        else {
            throw NATSProtocolError(description: "message payload for \(message.subject) is not followed by CRLF")
        }
        return NATSMessage(
            subject: message.subject, sid: message.sid, replyTo: message.replyTo, headers: headers, payload: payload)
    }

    /// Parses a header block: `NATS/1.0[ status[ description]]\r\n`, then
    /// `Name: value\r\n` lines (split at the first colon), then `\r\n`.
    static func parseHeaders(_ block: ByteBuffer) throws -> NATSHeaders {
        // Byte by byte: this runs for every message of a JetStream pull
        // (each carries the publisher's Nats-Msg-Id), and String trimming
        // and splitting took a fifth of the consumer's CPU.
        try block.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var headers = NATSHeaders()
            var lineStart = 0
            var first = true
            while lineStart < bytes.count {
                var lineEnd = lineStart
                while lineEnd < bytes.count, bytes[lineEnd] != 0x0A { lineEnd += 1 }
                let next = lineEnd + 1
                if lineEnd > lineStart, bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = UnsafeBufferPointer(rebasing: bytes[lineStart..<lineEnd])
                lineStart = next
                if first {
                    first = false
                    let version = Array("NATS/1.0".utf8)
                    guard line.count >= version.count, line.prefix(version.count).elementsEqual(version) else {
                        throw NATSProtocolError(description: "header block does not start with NATS/1.0")
                    }
                    let status = trimmed(UnsafeBufferPointer(rebasing: line[version.count...]))
                    guard !status.isEmpty else { continue }
                    let digits = status.prefix { $0 >= 0x30 && $0 <= 0x39 }
                    headers.status = digits.isEmpty ? nil : Int(String(decoding: digits, as: UTF8.self))
                    let description = trimmed(UnsafeBufferPointer(rebasing: status[digits.count...]))
                    headers.statusDescription = description.isEmpty ? nil : String(decoding: description, as: UTF8.self)
                    continue
                }
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
                headers.append(
                    String(decoding: UnsafeBufferPointer(rebasing: line[..<colon]), as: UTF8.self),
                    String(decoding: trimmed(UnsafeBufferPointer(rebasing: line[(colon + 1)...])), as: UTF8.self))
            }
            if first { throw NATSProtocolError(description: "header block does not start with NATS/1.0") }
            return headers
        }
    }

    /// `bytes` without leading and trailing spaces and tabs.
    static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[start..<end])
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        return String(self.drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}

/// The value of ASCII decimal digits (1 to 19 of them, nothing else), as
/// the protocol writes sizes, sids and sequences; `nil` otherwise.
@inline(__always)
func decimal(_ bytes: UnsafeRawBufferPointer) -> UInt64? {
    guard !bytes.isEmpty, bytes.count <= 19 else { return nil }
    var value: UInt64 = 0
    for byte in bytes {
        let digit = byte &- 0x30
        guard digit < 10 else { return nil }
        value = value * 10 + UInt64(digit)
    }
    return value
}

/// Writes client operations into a buffer (several per write, one flush).
enum NATSEncoder {
    /// `PUB`/`HPUB subject [reply] [header size] size\r\n[headers]payload\r\n`,
    /// written with one reservation and plain copies: this runs once per
    /// published line.
    static func publish(
        into buffer: inout ByteBuffer,
        subject: String,
        replyTo: String?,
        headers: NATSHeaders?,
        payload: ByteBuffer
    ) {
        let headerSize = headers.map { $0.isEmpty ? 0 : headerBlockSize($0) } ?? 0
        writeFrame(
            into: &buffer, subject: subject, replyLength: replyTo.map { $0.utf8.count } ?? -1,
            headerSize: headerSize, payload: payload
        ) { writer in
            if let replyTo {
                writer.put(UInt8(ascii: " "))
                writer.put(replyTo)
            }
        } headers: { writer in
            guard let headers else { return }
            writer.put("NATS/1.0\r\n")
            for field in headers.storage {
                writer.putHeaderText(field.name)
                writer.put(": ")
                writer.putHeaderText(field.value)
                writer.put("\r\n")
            }
            writer.put("\r\n")
        }
    }

    /// A JetStream publish: reply `replyPrefix` + `replyIndex`, and, when
    /// `messageID` is set, the single header `Nats-Msg-Id`. Nothing is
    /// allocated per message.
    static func publish(
        into buffer: inout ByteBuffer,
        subject: String,
        replyPrefix: String,
        replyIndex: Int,
        messageID: String?,
        payload: ByteBuffer
    ) {
        writeFrame(
            into: &buffer, subject: subject, replyLength: replyPrefix.utf8.count + decimalDigits(replyIndex),
            headerSize: messageID.map { jetStreamHeaderSize(messageID: $0) } ?? 0, payload: payload
        ) { writer in
            writer.put(UInt8(ascii: " "))
            writer.put(replyPrefix)
            writer.putDecimal(replyIndex)
        } headers: { writer in
            guard let messageID else { return }
            writer.put("NATS/1.0\r\nNats-Msg-Id: ")
            writer.putHeaderText(messageID)
            writer.put("\r\n\r\n")
        }
    }

    /// Reserves the exact frame size once and writes the control line (with
    /// `reply`, `replyLength` bytes, -1 for none), the header block (when
    /// `headerSize` > 0, exactly that many bytes from `headers`), the payload
    /// and the CRLF.
    @inline(__always)
    private static func writeFrame(
        into buffer: inout ByteBuffer, subject: String, replyLength: Int, headerSize: Int, payload: ByteBuffer,
        reply: (inout RawWriter) -> Void, headers: (inout RawWriter) -> Void
    ) {
        payload.withUnsafeReadableBytes { payloadBytes in
            let total = frameSize(
                subject: subject.utf8.count, reply: replyLength, headerBlock: headerSize, payload: payloadBytes.count)
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
                var writer = RawWriter(out.baseAddress!)
                writer.controlLine(subject: subject, headerBlock: headerSize, payload: payloadBytes.count, reply)
                if headerSize > 0 { headers(&writer) }
                writer.put(payloadBytes)
                writer.put("\r\n")
                return writer.at
            }
        }
    }

    /// The size of a header block with only `Nats-Msg-Id: messageID`.
    static func jetStreamHeaderSize(messageID: String) -> Int {
        // "NATS/1.0\r\n" + "Nats-Msg-Id: " + id + "\r\n" + "\r\n"
        10 + 13 + messageID.utf8.count + 4
    }

    /// The encoded size of a header block.
    static func headerBlockSize(_ headers: NATSHeaders) -> Int {
        var size = 12  // "NATS/1.0\r\n" + final "\r\n"
        for field in headers.storage { size += field.name.utf8.count + field.value.utf8.count + 4 }
        return size
    }

    /// The encoded size of a whole frame; `reply` is -1 without a reply.
    @inline(__always)
    static func frameSize(subject: Int, reply: Int, headerBlock: Int, payload: Int) -> Int {
        var size = (headerBlock > 0 ? 5 : 4) + subject + 1 + decimalDigits(headerBlock + payload) + 2
        if reply >= 0 { size += 1 + reply }
        if headerBlock > 0 { size += decimalDigits(headerBlock) + 1 }
        return size + headerBlock + payload + 2
    }

    /// The bytes a message counts against the server's `max_payload`.
    static func payloadSize(headers: NATSHeaders?, payload: ByteBuffer) -> Int {
        guard let headers, !headers.isEmpty else { return payload.readableBytes }
        return headerBlockSize(headers) + payload.readableBytes
    }

    /// How many decimal digits `value` (>= 0) has.
    @inline(__always)
    static func decimalDigits(_ value: Int) -> Int { RawWriter.digits(value) }

    static func subscribe(into buffer: inout ByteBuffer, subject: String, queueGroup: String?, sid: UInt64) {
        buffer.writeStaticString("SUB ")
        buffer.writeString(subject)
        if let queueGroup {
            buffer.writeStaticString(" ")
            buffer.writeString(queueGroup)
        }
        buffer.writeStaticString(" ")
        writeDecimal(Int(sid), into: &buffer)
        buffer.writeStaticString("\r\n")
    }

    static func unsubscribe(into buffer: inout ByteBuffer, sid: UInt64, max: Int? = nil) {
        buffer.writeStaticString("UNSUB ")
        writeDecimal(Int(sid), into: &buffer)
        if let max {
            buffer.writeStaticString(" ")
            writeDecimal(max, into: &buffer)
        }
        buffer.writeStaticString("\r\n")
    }

    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        let digits = decimalDigits(value)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: digits) { out in
            var writer = RawWriter(out.baseAddress!)
            writer.putDecimal(value)
            return writer.at
        }
    }

}

/// Writes `PUB` frames into memory reserved by
/// ``NATSConnection/PublishBuffer/appendFrames(capacity:_:)``.
///
/// Inlinable, so that a sink's per-record loop compiles to plain stores.
public struct FrameWriter {
    @usableFromInline var raw: RawWriter
    @usableFromInline let end: Int
    /// The server's `max_payload`.
    public let maxPayload: Int
    /// Messages written.
    public var count: Int { messages }
    @usableFromInline var messages = 0
    var at: Int { raw.at }

    init(_ memory: UnsafeMutableRawBufferPointer, maxPayload: Int) {
        raw = RawWriter(memory.baseAddress!)
        end = memory.count
        self.maxPayload = maxPayload
    }

    /// The bytes a `PUB` frame of a subject and a payload of these sizes takes.
    @inlinable @inline(__always)
    public static func frameSize(subject: Int, payload: Int) -> Int {
        // "PUB " subject " " digits "\r\n" payload "\r\n"
        4 + subject + 1 + RawWriter.digits(payload) + 2 + payload + 2
    }

    /// Writes `PUB <subject> <size>\r\n<payload>\r\n`.
    ///
    /// The subject is not checked: pass only subjects already made valid
    /// (no whitespace, no empty token). A payload larger than
    /// ``maxPayload`` is not written.
    ///
    /// - Returns: `false` when the payload exceeds ``maxPayload``.
    /// - Precondition: the frame fits in the capacity reserved.
    @inlinable @inline(__always)
    public mutating func publish(subject: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count <= maxPayload else { return false }
        precondition(
            raw.at + Self.frameSize(subject: subject.count, payload: payload.count) <= end,
            "FrameWriter: the frame does not fit in the capacity reserved")
        let crlf: StaticString = "\r\n"
        raw.put("PUB " as StaticString)
        raw.put(subject)
        raw.put(UInt8(ascii: " "))
        raw.putDecimal(payload.count)
        raw.put(crlf)
        raw.put(payload)
        raw.put(crlf)
        messages += 1
        return true
    }
}

/// Writes protocol bytes into memory reserved for exactly them.
@usableFromInline
struct RawWriter {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline var at = 0

    @inlinable @inline(__always)
    init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// How many decimal digits `value` (>= 0) has.
    @inlinable @inline(__always)
    static func digits(_ value: Int) -> Int {
        var digits = 1
        var remaining = value
        while remaining >= 10 {
            remaining /= 10
            digits += 1
        }
        return digits
    }

    @inlinable @inline(__always)
    mutating func put(_ byte: UInt8) {
        base.storeBytes(of: byte, toByteOffset: at, as: UInt8.self)
        at += 1
    }

    @inlinable @inline(__always)
    mutating func put(_ bytes: UnsafeRawBufferPointer) {
        if let source = bytes.baseAddress, bytes.count > 0 {
            (base + at).copyMemory(from: source, byteCount: bytes.count)
        }
        at += bytes.count
    }

    @inlinable @inline(__always)
    mutating func put(_ text: StaticString) {
        (base + at).copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
        at += text.utf8CodeUnitCount
    }

    @inline(__always)
    mutating func put(_ text: String) {
        var text = text
        text.withUTF8 { put(UnsafeRawBufferPointer($0)) }
    }

    /// A header name or value: a CR or LF in it (which would end the
    /// header early) is written as a space.
    @inline(__always)
    mutating func putHeaderText(_ text: String) {
        let start = at
        put(text)
        for position in start..<at {
            let byte = base.load(fromByteOffset: position, as: UInt8.self)
            if byte == 0x0D || byte == 0x0A { base.storeBytes(of: 0x20, toByteOffset: position, as: UInt8.self) }
        }
    }

    @inlinable @inline(__always)
    mutating func putDecimal(_ value: Int) {
        let digits = Self.digits(value)
        var remaining = value
        for position in stride(from: at + digits - 1, through: at, by: -1) {
            base.storeBytes(of: UInt8(48 + remaining % 10), toByteOffset: position, as: UInt8.self)
            remaining /= 10
        }
        at += digits
    }

    /// `PUB subject` or `HPUB subject`, then `extra` (the reply), then the
    /// size(s) and CRLF.
    @inline(__always)
    mutating func controlLine(subject: String, headerBlock: Int, payload: Int, _ extra: (inout RawWriter) -> Void) {
        put(headerBlock > 0 ? "HPUB " : "PUB ")
        put(subject)
        extra(&self)
        put(UInt8(ascii: " "))
        if headerBlock > 0 {
            putDecimal(headerBlock)
            put(UInt8(ascii: " "))
        }
        putDecimal(headerBlock + payload)
        put("\r\n")
    }
}
