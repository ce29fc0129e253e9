/// What the severity stage does with a line whose level it cannot recognise.
public enum UnknownSeverityPolicy: String, Sendable, CaseIterable {
    /// Let it through (the default: never lose what cannot be classified).
    case keep
    /// Drop it, acknowledged as dropped.
    case drop
}

/// Recognises each line's severity (see ``SeverityParser``), stores it on
/// the record for templates and sinks, and keeps the lines at or above a
/// threshold or in a set of levels.
///
/// With `inherit_continuations`, a line that continues the previous record of
/// the same origin (a stack frame, `Caused by:`, `... 3 more`, an exception
/// header) takes that record's level, so a stack trace stays with its error
/// line (or is dropped with its debug line).
public struct SeverityTransform: Transform, FieldProducer {
    /// Settings of a severity stage.
    public struct Options: StageSettings {
        /// Keep lines at least this severe (`nil`: no threshold).
        public var atLeast: Severity?
        /// Keep only these levels (`nil`: no set).
        public var levels: Set<Severity>?
        /// What to do with lines without a recognisable level.
        public var unknown: UnknownSeverityPolicy = .keep
        /// Continuation lines take the previous line's level.
        public var inheritContinuations = false
        /// How far into a plain-text line level words are looked for.
        public var searchBytes = 256

        /// Default options: tag levels, keep every line.
        public init() {}
    }

    let options: Options

    /// Creates a severity stage.
    public init(options: Options) {
        self.options = options
    }

    /// Severity names accepted in pipeline files.
    static let levelNames = Severity.allCases.map(\.description) + ["fatal", "crit", "err", "warn", "emerg"]

    static let definition = StageDefinition.transform(
        "severity",
        summary: "Recognises each line's level (syslog PRI, JSON, logfmt, plain words) and keeps lines by level.",
        options: [
            StageOption<Options>.custom(
                "at_least", .choice(levelNames),
                "Keep lines at least this severe, e.g. `warning` keeps warning, error, critical, alert, emergency."
            ) { options, settings in
                settings.atLeast = options.string("at_least").flatMap { SeverityParser.level(named: Array($0.utf8)) }
            },
            .custom("levels", .stringList, "Keep only these levels (instead of `at_least`).") { options, settings in
                var levels: Set<Severity> = []
                for (index, name) in options.stringList("levels").enumerated() {
                    guard let level = SeverityParser.level(named: Array(name.utf8)) else {
                        throw options.error(
                            "levels", item: index, "'\(name)' is not a level",
                            hint: "levels: \(levelNames.joined(separator: ", "))")
                    }
                    levels.insert(level)
                }
                settings.levels = levels
            },
            .choice("unknown", \.unknown, "Lines with no recognisable level: `keep` or `drop`."),
            .boolean(
                "inherit_continuations", \.inheritContinuations,
                "Stack-trace continuation lines take the previous line's level."),
            .size("search_bytes", \.searchBytes, "How far into a plain-text line to look for a level word."),
        ]
    ) { settings, options in
        if settings.atLeast != nil, settings.levels != nil {
            throw options.error("levels", "give either at_least or levels, not both")
        }
        return SeverityTransform(options: settings)
    }

    public var producedFields: Set<String> { [] }

    /// Whether a record with `severity` passes.
    func keeps(_ severity: Severity?) -> Bool {
        guard let severity else { return options.unknown == .keep }
        if let atLeast = options.atLeast { return severity <= atLeast }
        if let levels = options.levels { return levels.contains(severity) }
        return true
    }

    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        // The last level seen per origin, for continuation lines.
        var previous = ContinuationState()
        for await var batch in input {
            for index in batch.records.indices {
                // Fields are read in place: a copy of the record costs a
                // retain and a release per field.
                let (found, continuation) = batch.records[index].bytes.withUnsafeReadableBytes { bytes in
                    let level = SeverityParser.parse(bytes, searchLimit: options.searchBytes)
                    return (level, level == nil && options.inheritContinuations && SeverityParser.isContinuation(bytes))
                }
                var level = found ?? batch.records[index].severity
                if continuation {
                    level = previous.level(source: batch.records[index].source, origin: batch.records[index].origin)
                } else if options.inheritContinuations {
                    previous.set(level, source: batch.records[index].source, origin: batch.records[index].origin)
                }
                batch.records[index].severity = level
            }
            batch.removeAll { !keeps($0.severity) }
            if !batch.isEmpty {
                try await output.send(batch)
            }
        }
    }
}

/// The last level per (source, origin), with a fast path for consecutive
/// lines of the same origin.
struct ContinuationState {
    private var lastSource = ""
    private var lastOrigin = ""
    private var lastLevel: Severity?
    private var levels: [String: Severity?] = [:]

    mutating func level(source: String, origin: String) -> Severity? {
        if source == lastSource, origin == lastOrigin { return lastLevel }
        return levels[source + "\u{0}" + origin] ?? nil
    }

    mutating func set(_ level: Severity?, source: String, origin: String) {
        if source != lastSource || origin != lastOrigin {
            levels[lastSource + "\u{0}" + lastOrigin] = lastLevel
            if levels.count > 10_000 { levels.removeAll() }
            lastSource = source
            lastOrigin = origin
        }
        lastLevel = level
    }
}
