/// The type of a stage option, which decides how its value is checked.
public indirect enum OptionType: Sendable {
    /// Any text.
    case string
    /// A template with `{field}` placeholders (see ``Template``).
    case template
    /// A whole number within `range`.
    case integer(ClosedRange<Int>)
    /// `true` or `false`.
    case boolean
    /// A duration: `500ms`, `30s`, `1d`.
    case duration
    /// A size: `64KiB`, `1MiB`.
    case size
    /// One of the listed words.
    case choice([String])
    /// A list of texts; a single text is accepted as a list of one.
    case stringList
    /// A map with its own options.
    case object([OptionSpec])

    /// How the type reads in `logpipe stages` and error messages.
    public var displayName: String {
        switch self {
        case .string: "string"
        case .template: "template"
        case .integer(let range):
            if range.upperBound == Int.max {
                "integer >= \(range.lowerBound)"
            } else {
                "integer \(range.lowerBound)...\(range.upperBound)"
            }
        case .boolean: "boolean"
        case .duration: "duration"
        case .size: "size"
        case .choice(let words): words.joined(separator: " | ")
        case .stringList: "list of strings"
        case .object: "map"
        }
    }
}

/// One option a stage type accepts: its name, type, default and meaning.
///
/// The same definitions drive validation, the typed accessors of
/// ``StageOptions``, `logpipe stages` and docs/stages.md.
public struct OptionSpec: Sendable {
    /// The key in the pipeline file.
    public var name: String
    /// How values are checked.
    public var type: OptionType
    /// The default, written as in a pipeline file; `nil` when there is none.
    public var defaultValue: String?
    /// Whether the option must be given.
    public var isRequired: Bool
    /// One line saying what the option does.
    public var summary: String

    /// Creates an option definition.
    public init(
        _ name: String, _ type: OptionType, default defaultValue: String? = nil, required: Bool = false,
        _ summary: String
    ) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.isRequired = required
        self.summary = summary
    }
}

/// A registered stage type: what it is called, what it does, its options and
/// how to build one.
public struct StageDefinition: Sendable {
    /// The `type:` value in pipeline files.
    public var type: String
    /// Source, transform or sink.
    public var kind: StageKind
    /// One line saying what the stage does.
    public var summary: String
    /// Every option the stage accepts (besides `type` and `inputs`).
    public var options: [OptionSpec]
    /// Builds a stage from validated options.
    public var make: @Sendable (StageOptions) throws -> AnyStage
    /// Where a documented default would not read back as the typed default
    /// (empty for stages declared with ``StageOption``s whose defaults agree;
    /// `nil` for stages declared with bare ``OptionSpec``s, whose defaults
    /// nothing checks).
    public var defaultMismatches: (@Sendable () -> [String])?

    init(
        type: String, kind: StageKind, summary: String, options: [OptionSpec],
        defaultMismatches: (@Sendable () -> [String])? = nil,
        make: @escaping @Sendable (StageOptions) throws -> AnyStage
    ) {
        self.type = type
        self.kind = kind
        self.summary = summary
        self.options = options
        self.defaultMismatches = defaultMismatches
        self.make = make
    }

    /// A definition whose options are declared once each, with their
    /// values read into `Settings` before `make` sees them.
    static func declared<Settings: StageSettings>(
        _ type: String, kind: StageKind, summary: String, options: [StageOption<Settings>],
        make: @escaping @Sendable (Settings, StageOptions) throws -> AnyStage
    ) -> StageDefinition {
        StageDefinition(
            type: type, kind: kind, summary: summary, options: options.map(\.spec),
            defaultMismatches: { options.defaultMismatches() }
        ) { stageOptions in
            try make(try options.read(stageOptions), stageOptions)
        }
    }

    /// Defines a source type whose options are declared with ``StageOption``:
    /// `make` gets the settings they were read into (and the raw options,
    /// for errors located at an option).
    public static func source<Settings: StageSettings>(
        _ type: String, summary: String, options: [StageOption<Settings>],
        make: @escaping @Sendable (Settings, StageOptions) throws -> any Source
    ) -> StageDefinition {
        declared(type, kind: .source, summary: summary, options: options) { .source(try make($0, $1)) }
    }

    /// Defines a transform type whose options are declared with ``StageOption``.
    public static func transform<Settings: StageSettings>(
        _ type: String, summary: String, options: [StageOption<Settings>],
        make: @escaping @Sendable (Settings, StageOptions) throws -> any Transform
    ) -> StageDefinition {
        declared(type, kind: .transform, summary: summary, options: options) { .transform(try make($0, $1)) }
    }

    /// Defines a sink type whose options are declared with ``StageOption``.
    public static func sink<Settings: StageSettings>(
        _ type: String, summary: String, options: [StageOption<Settings>],
        make: @escaping @Sendable (Settings, StageOptions) throws -> any Sink
    ) -> StageDefinition {
        declared(type, kind: .sink, summary: summary, options: options) { .sink(try make($0, $1)) }
    }

    /// Defines a source type.
    public static func source(
        _ type: String,
        summary: String,
        options: [OptionSpec],
        make: @escaping @Sendable (StageOptions) throws -> any Source
    ) -> StageDefinition {
        StageDefinition(type: type, kind: .source, summary: summary, options: options) { .source(try make($0)) }
    }

    /// Defines a transform type.
    public static func transform(
        _ type: String,
        summary: String,
        options: [OptionSpec],
        make: @escaping @Sendable (StageOptions) throws -> any Transform
    ) -> StageDefinition {
        StageDefinition(type: type, kind: .transform, summary: summary, options: options) { .transform(try make($0)) }
    }

    /// Defines a sink type.
    public static func sink(
        _ type: String,
        summary: String,
        options: [OptionSpec],
        make: @escaping @Sendable (StageOptions) throws -> any Sink
    ) -> StageDefinition {
        StageDefinition(type: type, kind: .sink, summary: summary, options: options) { .sink(try make($0)) }
    }
}
