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
        var rest = Substring(subject)
        for (index, segment) in segments.enumerated() {
            switch segment {
            case .literal(let literal):
                guard rest.hasPrefix(literal) else { return nil }
                rest = rest.dropFirst(literal.count)
            case .placeholder(let name):
                let value: Substring
                if index + 1 < segments.count, case .literal(let next) = segments[index + 1] {
                    guard let end = rest.range(of: next) else { return nil }
                    value = rest[..<end.lowerBound]
                    if value.contains(".") { return nil }
                } else {
                    value = rest
                }
                guard !value.isEmpty else { return nil }
                values[name] = String(value)
                rest = rest[value.endIndex...]
            }
        }
        return rest.isEmpty ? values : nil
    }

    /// Sets the record's `host`, `partition` and named fields from `subject`;
    /// returns false (changing nothing) if the subject does not fit.
    @discardableResult
    public func apply(_ subject: String, to record: inout Record) -> Bool {
        guard let values = match(subject) else { return false }
        for (name, value) in values {
            switch name {
            case "host": record.host = value
            case "partition": record.partition = Int(value)
            case "subject", "source", "origin", "severity": break
            default: record.fields[name] = value
            }
        }
        return true
    }

    /// The placeholder names, in order.
    public var placeholderNames: [String] {
        segments.compactMap { if case .placeholder(let name) = $0 { name } else { nil } }
    }

    public var description: String { text }
}
