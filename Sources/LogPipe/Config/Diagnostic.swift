/// One problem found in a pipeline file, with where it is and how to fix it.
public struct Diagnostic: Sendable, CustomStringConvertible, Error {
    /// Whether the problem stops the pipeline from running.
    public enum Severity: String, Sendable {
        case error
        case warning
    }

    /// Error or warning.
    public var severity: Severity
    /// What is wrong.
    public var message: String
    /// What would be valid, or how to fix it.
    public var hint: String?
    /// Where the problem is, when known.
    public var location: SourceLocation?

    /// Creates a diagnostic.
    public init(_ severity: Severity = .error, _ message: String, hint: String? = nil, at location: SourceLocation?) {
        self.severity = severity
        self.message = message
        self.hint = hint
        self.location = location
    }

    /// Creates an error.
    public init(_ message: String, hint: String? = nil, at location: SourceLocation?) {
        self.init(.error, message, hint: hint, at: location)
    }

    /// `file:line:column: error: message` followed by an indented hint line.
    public var description: String {
        var text = ""
        if let location { text += "\(location): " }
        text += "\(severity.rawValue): \(message)"
        if let hint { text += "\n    hint: \(hint)" }
        return text
    }
}

/// Thrown when a pipeline file has errors; carries every problem found.
public struct PipelineFileError: Error, CustomStringConvertible {
    /// Every error and warning, in file order.
    public var diagnostics: [Diagnostic]

    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}

/// An invalid option value, thrown by stage factories; the loader adds the
/// file, line and column of the option.
public struct OptionError: Error, CustomStringConvertible {
    /// The option's path within the stage, e.g. `path` or `auth.user`.
    public var option: String
    /// What is wrong.
    public var message: String
    /// How to fix it.
    public var hint: String?
    /// Where the option's value was written.
    public var location: SourceLocation?

    /// Creates an option error.
    public init(option: String, message: String, hint: String? = nil, location: SourceLocation? = nil) {
        self.option = option
        self.message = message
        self.hint = hint
        self.location = location
    }

    public var description: String {
        "option '\(option)': \(message)" + (hint.map { " (\($0))" } ?? "")
    }
}

/// Several invalid option values of one stage, thrown by a stage factory
/// that checks them all (every bad pattern of a list, say) so that one
/// `logpipe validate` run reports each.
public struct OptionErrors: Error, CustomStringConvertible {
    /// The problems, in option order.
    public var errors: [OptionError]

    /// Creates the list.
    public init(_ errors: [OptionError]) {
        self.errors = errors
    }

    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
