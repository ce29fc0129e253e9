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
        let bytes = line.readableBytesView
        // The operation name: letters up to the first space or tab.
        let nameEnd = bytes.firstIndex { $0 == 0x20 || $0 == 0x09 } ?? bytes.endIndex
        let name = String(decoding: bytes[bytes.startIndex..<nameEnd], as: UTF8.self).uppercased()
        let argumentsStart = nameEnd
        switch name {
        case "MSG", "HMSG":
            let arguments = bytes[argumentsStart...].split(whereSeparator: { $0 == 0x20 || $0 == 0x09 })
            let withHeaders = name == "HMSG"
            let expected = withHeaders ? [4, 5] : [3, 4]
            guard expected.contains(arguments.count) else {
                throw NATSProtocolError(description: "malformed \(name): '\(String(decoding: bytes, as: UTF8.self))'")
            }
            let subject = String(decoding: arguments[0], as: UTF8.self)
            guard let sid = UInt64(String(decoding: arguments[1], as: UTF8.self)) else {
                throw NATSProtocolError(
                    description: "malformed \(name) sid: '\(String(decoding: bytes, as: UTF8.self))'")
            }
            let hasReply = arguments.count == expected[1]
            let replyTo = hasReply ? String(decoding: arguments[2], as: UTF8.self) : nil
            let sizes = arguments.suffix(withHeaders ? 2 : 1).map { Int(String(decoding: $0, as: UTF8.self)) }
            guard sizes.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw NATSProtocolError(
                    description: "malformed \(name) size: '\(String(decoding: bytes, as: UTF8.self))'")
            }
            let total = sizes.last!!
            let headerBytes = withHeaders ? sizes[0]! : 0
            guard headerBytes <= total else {
                throw NATSProtocolError(description: "HMSG header size larger than total size")
            }
            let message = PendingMessage(
                subject: subject, sid: sid, replyTo: replyTo, headerBytes: headerBytes, totalBytes: total)
            guard buffer.readableBytes >= total + 2 else {
                pending = message
                return nil
            }
            return .message(try readPayload(message, from: &buffer))
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
        let text = String(decoding: block.readableBytesView, as: UTF8.self)
        var lines = text.components(separatedBy: "\r\n")
        guard let first = lines.first, first.hasPrefix("NATS/1.0") else {
            throw NATSProtocolError(description: "header block does not start with NATS/1.0")
        }
        lines.removeFirst()
        var headers = NATSHeaders()
        let statusPart = first.dropFirst("NATS/1.0".count).trimmingCharacters(in: " \t")
        if !statusPart.isEmpty {
            let code = statusPart.prefix { $0.isNumber }
            headers.status = Int(code)
            let description = statusPart.dropFirst(code.count).trimmingCharacters(in: " \t")
            headers.statusDescription = description.isEmpty ? nil : description
        }
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            headers.append(name, value)
        }
        return headers
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        return String(self.drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(self).trimmingCharacters(in: set)
    }
}

/// Writes client operations into a buffer (several per write, one flush).
enum NATSEncoder {
    static func publish(
        into buffer: inout ByteBuffer,
        subject: String,
        replyTo: String?,
        headers: NATSHeaders?,
        payload: ByteBuffer
    ) {
        if let headers, !headers.isEmpty {
            var block = ByteBuffer()
            block.writeStaticString("NATS/1.0\r\n")
            for field in headers.storage {
                block.writeString(field.name)
                block.writeStaticString(": ")
                block.writeString(field.value)
                block.writeStaticString("\r\n")
            }
            block.writeStaticString("\r\n")
            buffer.writeStaticString("HPUB ")
            buffer.writeString(subject)
            if let replyTo {
                buffer.writeStaticString(" ")
                buffer.writeString(replyTo)
            }
            buffer.writeStaticString(" ")
            writeDecimal(block.readableBytes, into: &buffer)
            buffer.writeStaticString(" ")
            writeDecimal(block.readableBytes + payload.readableBytes, into: &buffer)
            buffer.writeStaticString("\r\n")
            buffer.writeImmutableBuffer(block)
        } else {
            buffer.writeStaticString("PUB ")
            buffer.writeString(subject)
            if let replyTo {
                buffer.writeStaticString(" ")
                buffer.writeString(replyTo)
            }
            buffer.writeStaticString(" ")
            writeDecimal(payload.readableBytes, into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeImmutableBuffer(payload)
        buffer.writeStaticString("\r\n")
    }

    /// The bytes a message counts against the server's `max_payload`.
    static func payloadSize(headers: NATSHeaders?, payload: ByteBuffer) -> Int {
        guard let headers, !headers.isEmpty else { return payload.readableBytes }
        var size = 12  // "NATS/1.0\r\n" + final "\r\n"
        for field in headers.storage { size += field.name.utf8.count + field.value.utf8.count + 4 }
        return size + payload.readableBytes
    }

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

    @inline(__always)
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        if value < 10 {
            buffer.writeInteger(UInt8(48 + value))
            return
        }
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var remaining = value
        withUnsafeMutableBytes(of: &digits) { raw in
            while remaining > 0 {
                raw[19 - count] = UInt8(48 + remaining % 10)
                remaining /= 10
                count += 1
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[(20 - count)...]))
        }
    }
}
