/// Reads fields back out of a subject, the inverse of a subject template:
/// `logs.p{partition}.{host}` matches `logs.p3.web1.example.net` with
/// partition `3` and host `web1.example.net`.
///
/// A placeholder takes the bytes up to the literal text that follows it; the
/// last placeholder takes everything that remains (so a host keeps its dots).
/// A placeholder followed by a literal never spans a `.`, so one subject token
/// maps to one value.
public struct SubjectPattern: Sendable, Hashable, CustomStringConvertible {
    enum Segment: Sendable, Hashable {
        case literal(String)
        case placeholder(String)
    }

    let segments: [Segment]
    /// The pattern as written.
    public let text: String

    /// Parses `pattern`; placeholders are `{name}`.
    public init(_ pattern: String) throws {
        let template = try Template(pattern)
        var segments: [Segment] = []
        for segment in template.segments {
            switch segment {
            case .literal(let text): segments.append(.literal(text))
            case .attribute(let attribute): segments.append(.placeholder(attribute.rawValue))
            case .field(let name): segments.append(.placeholder(name))
            case .time:
                throw Template.ParseError(
                    message: "a subject pattern cannot contain time parts",
                    hint: "use {host}, {partition} or field names")
            }
            if case .placeholder = segments.last, segments.count >= 2, case .placeholder = segments[segments.count - 2]
            {
                throw Template.ParseError(
                    message: "subject pattern '\(pattern)' has two placeholders in a row",
                    hint: "separate them with literal text, such as '.'"
                )
            }
        }
        self.segments = segments
        self.text = pattern
    }

    /// The placeholder values of `subject`, or `nil` if it does not fit the pattern.
    public func match(_ subject: String) -> [String: String]? {
        var values: [String: String] = [:]
        return forEachValue(in: subject) { values[$0] = $1 } ? values : nil
    }

    /// Calls `body` with each placeholder's name and value once the whole
    /// subject is known to fit (never for a subject that does not), and
    /// returns whether it fit. Works on the subject's bytes: it runs once
    /// per message a consumer receives.
    @inline(__always)
    func forEachValue(in subject: String, _ body: (String, String) -> Void) -> Bool {
        var subject = subject
        return subject.withUTF8 { bytes in
            withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: max(segments.count, 1)) { spans in
                var position = 0
                for index in segments.indices {
                    switch segments[index] {
                    case .literal(let literal):
                        let count = literal.utf8.count
                        guard bytes.count - position >= count,
                            literal.utf8.elementsEqual(
                                UnsafeBufferPointer(rebasing: bytes[position..<(position + count)]))
                        else { return false }
                        position += count
                    case .placeholder:
                        var end = bytes.count
                        if index + 1 < segments.count, case .literal(let next) = segments[index + 1] {
                            guard let found = Self.firstIndex(of: next, in: bytes, from: position) else { return false }
                            end = found
                            if bytes[position..<end].contains(UInt8(ascii: ".")) { return false }
                        }
                        guard end > position else { return false }
                        (spans.baseAddress! + index).initialize(to: position..<end)
                        position = end
                    }
                }
                guard position == bytes.count else { return false }
                for index in segments.indices {
                    if case .placeholder(let name) = segments[index] {
                        body(name, String(decoding: UnsafeBufferPointer(rebasing: bytes[spans[index]]), as: UTF8.self))
                    }
                }
                return true
            }
        }
    }

    /// Where `literal` first occurs in `bytes` at or after `start`.
    static func firstIndex(of literal: String, in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        let utf8 = literal.utf8
        guard let first = utf8.first, bytes.count - start >= utf8.count else { return nil }
        var position = start
        while position + utf8.count <= bytes.count {
            if bytes[position] == first,
                utf8.elementsEqual(UnsafeBufferPointer(rebasing: bytes[position..<(position + utf8.count)]))
            {
                return position
            }
            position += 1
        }
        return nil
    }

    /// Sets the record's `host`, `partition` and named fields from `subject`;
    /// returns false (changing nothing) if the subject does not fit.
    @discardableResult
    public func apply(_ subject: String, to record: inout Record) -> Bool {
        forEachValue(in: subject) { name, value in
            switch name {
            case "host": record.host = value
            case "partition": record.partition = Int(value)
            case "subject", "source", "origin", "severity": break
            default: record.fields[name] = value
            }
        }
    }

    /// The placeholder names, in order.
    public var placeholderNames: [String] {
        segments.compactMap { if case .placeholder(let name) = $0 { name } else { nil } }
    }

    public var description: String { text }
}
