/// A text with `{field}` placeholders filled from a record: subjects, file
/// paths, keys.
///
/// Placeholders: `{host}`, `{partition}`, `{severity}`, `{source}`, `{origin}`,
/// `{subject}`, `{offset}` (the line's byte offset in its origin), any named
/// field of the record (for example a named regex capture), and
/// strftime-style parts of the record's receive time in UTC:
/// `{%Y}`, `{%m}`, `{%d}`, `{%H}`, `{%M}`, `{%S}`, `{%j}`, `{%y}`, `{%F}`
/// (`%Y-%m-%d`), `{%T}` (`%H:%M:%S`), combinable as `{%Y-%m-%d}`. `{{` and
/// `}}` stand for literal braces. A placeholder whose value the record does not
/// have renders as `unknown`, so a file path or subject is never left with an
/// empty component.
public struct Template: Sendable, Hashable, CustomStringConvertible {
    /// Why a template could not be parsed.
    public struct ParseError: Error, CustomStringConvertible {
        /// What is wrong.
        public var message: String
        /// How to fix it.
        public var hint: String?
        public var description: String { message }
    }

    /// A built-in record attribute a placeholder may name.
    public enum Attribute: String, Sendable, Hashable, CaseIterable {
        case host, partition, severity, source, origin, subject, offset
    }

    enum Segment: Sendable, Hashable {
        case literal(String)
        case attribute(Attribute)
        case field(String)
        case time(String)
    }

    /// The strftime conversions a `{%...}` placeholder may use.
    static let timeConversions: Set<Character> = ["Y", "m", "d", "H", "M", "S", "j", "y", "F", "T", "%"]

    let segments: [Segment]
    /// The template as written.
    public let text: String

    /// The empty template (renders as the empty string).
    public static let empty = try! Template("")

    /// Parses `text`.
    public init(_ text: String) throws {
        self.text = text
        var segments: [Segment] = []
        var literal = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            let next = text.index(after: index)
            if character == "{" {
                if next < text.endIndex, text[next] == "{" {
                    literal.append("{")
                    index = text.index(after: next)
                    continue
                }
                guard let close = text[next...].firstIndex(of: "}") else {
                    throw ParseError(
                        message: "template '\(text)' has '{' without a closing '}'", hint: "write {{ for a literal {")
                }
                let name = String(text[next..<close])
                if name.hasPrefix("%") {
                    try Template.checkTimeFormat(name, in: text)
                    if !literal.isEmpty {
                        segments.append(.literal(literal))
                        literal = ""
                    }
                    segments.append(.time(name))
                    index = text.index(after: close)
                    continue
                }
                guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                    throw ParseError(
                        message: "template '\(text)' has an invalid placeholder '{\(name)}'",
                        hint:
                            "placeholders are {host}, {partition}, {severity}, {source}, {origin}, {subject}, {offset}, a field name, or a time like {%Y-%m-%d}"
                    )
                }
                if !literal.isEmpty {
                    segments.append(.literal(literal))
                    literal = ""
                }
                segments.append(Attribute(rawValue: name).map(Segment.attribute) ?? .field(name))
                index = text.index(after: close)
            } else if character == "}" {
                guard next < text.endIndex, text[next] == "}" else {
                    throw ParseError(
                        message: "template '\(text)' has '}' without an opening '{'", hint: "write }} for a literal }")
                }
                literal.append("}")
                index = text.index(after: next)
            } else {
                literal.append(character)
                index = next
            }
        }
        if !literal.isEmpty { segments.append(.literal(literal)) }
        self.segments = segments
    }

    /// Whether the template has no placeholders (renders the same for every record).
    public var isConstant: Bool {
        segments.allSatisfy { if case .literal = $0 { true } else { false } }
    }

    /// The placeholder names used, in order (time parts as written, `%Y`).
    public var placeholders: [String] {
        segments.compactMap {
            switch $0 {
            case .literal: nil
            case .attribute(let attribute): attribute.rawValue
            case .field(let name): name
            case .time(let format): format
            }
        }
    }

    /// The record fields (not built-in attributes or time parts) it names.
    public var fieldNames: [String] {
        segments.compactMap { if case .field(let name) = $0 { name } else { nil } }
    }

    static func checkTimeFormat(_ format: String, in text: String) throws {
        var characters = format.makeIterator()
        while let character = characters.next() {
            guard character == "%" else { continue }
            guard let conversion = characters.next(), timeConversions.contains(conversion) else {
                throw ParseError(
                    message: "template '\(text)' has an unsupported time part in '{\(format)}'",
                    hint: "use %Y %m %d %H %M %S %j %y %F %T or %%"
                )
            }
        }
    }

    static func formatTime(_ format: String, _ time: CivilTime) -> String {
        var result = ""
        var characters = format.makeIterator()
        while let character = characters.next() {
            guard character == "%", let conversion = characters.next() else {
                result.append(character)
                continue
            }
            switch conversion {
            case "Y": result += String(time.year)
            case "y": result += CivilTime.twoDigits(time.year % 100)
            case "m": result += CivilTime.twoDigits(time.month)
            case "d": result += CivilTime.twoDigits(time.day)
            case "H": result += CivilTime.twoDigits(time.hour)
            case "M": result += CivilTime.twoDigits(time.minute)
            case "S": result += CivilTime.twoDigits(time.second)
            case "j":
                let day = time.dayOfYear
                result += day < 10 ? "00\(day)" : day < 100 ? "0\(day)" : "\(day)"
            case "F": result += time.date
            case "T": result += time.clock
            default: result.append(conversion)
            }
        }
        return result
    }

    /// Fills the placeholders from `record`; each value passes through
    /// `escape` first (a file sink uses it to keep values inside one path
    /// component).
    public func render(_ record: Record, escape: (String) -> String = { $0 }) -> String {
        if segments.count == 1 {
            // One segment: no concatenation (and no copy of the value).
            switch segments[0] {
            case .literal(let text): return text
            case .attribute(let attribute): return escape(Template.value(of: attribute, in: record) ?? "unknown")
            case .field(let name): return escape(record.fields[name] ?? "unknown")
            case .time(let format): return escape(Template.formatTime(format, CivilTime(record.receivedAt)))
            }
        }
        var result = ""
        for segment in segments {
            switch segment {
            case .literal(let text): result += text
            case .attribute(let attribute): result += escape(Template.value(of: attribute, in: record) ?? "unknown")
            case .field(let name): result += escape(record.fields[name] ?? "unknown")
            case .time(let format): result += escape(Template.formatTime(format, CivilTime(record.receivedAt)))
            }
        }
        return result
    }

    static func value(of attribute: Attribute, in record: Record) -> String? {
        switch attribute {
        case .host: record.host.isEmpty ? nil : record.host
        case .partition: record.partition.map(String.init)
        case .severity: record.severity?.description
        case .source: record.source
        case .origin: record.origin
        case .subject: record.subject
        case .offset: record.offset.map(String.init)
        }
    }

    public var description: String { text }
}
