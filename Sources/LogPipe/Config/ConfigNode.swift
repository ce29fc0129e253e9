/// A position in a pipeline file.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    /// The file's path as given by the user.
    public var file: String
    /// Line, from 1.
    public var line: Int
    /// Column, from 1.
    public var column: Int

    /// Creates a location.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// A value from a pipeline file (or built in code): a scalar, a list or a map,
/// each with where it was written.
///
/// Pipeline files are parsed into `ConfigNode`s after `${VAR}` interpolation;
/// option validation and stage factories work on them, so an app can also
/// configure registered stage types from code.
public struct ConfigNode: Sendable, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    /// One key and value of a map.
    public struct Entry: Sendable {
        /// The key.
        public var key: String
        /// Where the key was written.
        public var keyLocation: SourceLocation?
        /// The value.
        public var value: ConfigNode

        /// Creates an entry.
        public init(key: String, keyLocation: SourceLocation? = nil, value: ConfigNode) {
            self.key = key
            self.keyLocation = keyLocation
            self.value = value
        }
    }

    /// The shape of a node.
    public indirect enum Content: Sendable {
        /// A scalar as written (after interpolation). `null` values are `nil`.
        case scalar(String?)
        /// A sequence.
        case list([ConfigNode])
        /// A mapping, in file order.
        case map([Entry])
    }

    /// The node's value.
    public var value: Content
    /// Where the node was written, if it came from a file.
    public var location: SourceLocation?
    /// An error was already reported for this value (a failed `${VAR}`), so
    /// the stage holding it is not built: that would only repeat the error.
    var isPoisoned = false

    /// Whether this node or one inside it is poisoned.
    var containsPoison: Bool {
        switch value {
        case .scalar: isPoisoned
        case .list(let items): isPoisoned || items.contains { $0.containsPoison }
        case .map(let entries): isPoisoned || entries.contains { $0.value.containsPoison }
        }
    }

    /// Creates a node.
    public init(_ value: Content, location: SourceLocation? = nil) {
        self.value = value
        self.location = location
    }

    public typealias Key = String
    public typealias Value = ConfigNode

    public init(stringLiteral value: String) {
        self.init(.scalar(value))
    }

    public init(arrayLiteral elements: ConfigNode...) {
        self.init(.list(elements))
    }

    public init(dictionaryLiteral elements: (String, ConfigNode)...) {
        self.init(.map(elements.map { Entry(key: $0.0, value: $0.1) }))
    }

    /// The scalar's text, or `nil` for lists, maps and `null`.
    public var scalar: String? {
        if case .scalar(let text) = value { return text }
        return nil
    }

    /// The list's items, or `nil` if this is not a list.
    public var list: [ConfigNode]? {
        if case .list(let items) = value { return items }
        return nil
    }

    /// The map's entries, or `nil` if this is not a map.
    public var entries: [Entry]? {
        if case .map(let entries) = value { return entries }
        return nil
    }

    /// The value for `key` in a map.
    public subscript(key: String) -> ConfigNode? {
        entries?.first { $0.key == key }?.value
    }

    /// A short word for the node's shape, for error messages.
    var shapeName: String {
        switch value {
        case .scalar(nil): "null"
        case .scalar: "a scalar"
        case .list: "a list"
        case .map: "a map"
        }
    }

    /// The value as text that ignores where it was written and the order of
    /// map keys: equal for two nodes that configure a stage the same way
    /// (what a reload compares to keep a stage running).
    public var canonicalText: String {
        switch value {
        case .scalar(nil): return "~"
        case .scalar(let text?):
            return "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                + "\""
        case .list(let items): return "[" + items.map(\.canonicalText).joined(separator: ",") + "]"
        case .map(let entries):
            return "{"
                + entries.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value.canonicalText)" }.joined(
                    separator: ",") + "}"
        }
    }
}
