import NIOCore

/// What a regex stage does when a match hits `match_limit` (or the heap or
/// JIT stack limit) and so cannot say whether the line matches.
public enum MatchLimitPolicy: String, Sendable, CaseIterable {
    /// Keep the record (it reaches the sinks); counted as `match_limit_hits`.
    case keep
    /// Drop the record, acknowledged as dropped; counted as `match_limit_hits`.
    case drop
    /// Stop the pipeline with an error naming the pattern.
    case fail
}

/// Keeps or drops records by PCRE2 patterns and extracts named captures into
/// record fields.
///
/// A record passes when it matches any `include` pattern (or there is none)
/// and no `exclude` pattern. Then every `extract` pattern runs, and its named
/// groups become fields (`(?<user>\w+)` sets `{user}` for templates); a group
/// named `host` also sets the record's host. Dropped records are acknowledged
/// as dropped.
public struct RegexTransform: Transform {
    /// Settings of a regex stage.
    public struct Options: Sendable {
        /// Any-of patterns a record must match (none: every record passes).
        public var include: [PCRE2Regex] = []
        /// Any-of patterns that drop a record.
        public var exclude: [PCRE2Regex] = []
        /// Patterns whose named captures become fields.
        public var extract: [PCRE2Regex] = []
        /// Match this field's value instead of the line (`nil`: the line).
        public var field: String?
        /// What to do when a match hits a limit.
        public var onLimit: MatchLimitPolicy = .keep

        /// Empty options (pass everything).
        public init() {}
    }

    /// The pattern that stopped a `on_limit: fail` pipeline.
    public struct MatchLimitError: Error, CustomStringConvertible {
        public var pattern: String
        public var origin: String
        public var description: String {
            "regex '\(pattern)' hit its match limit on a line from \(origin); simplify the pattern, raise match_limit, or set on_limit: keep or drop"
        }
    }

    let options: Options

    /// Creates a regex stage.
    public init(options: Options) {
        self.options = options
    }

    /// The options as a pipeline file gives them: patterns are compiled
    /// with the flags, once all are read.
    struct Declared: StageSettings {
        var include: [String] = []
        var exclude: [String] = []
        var extract: [String] = []
        var regex = PCRE2Regex.Options()
        var field: String?
        var onLimit = Options().onLimit

        var matchLimit: Int {
            get { Int(regex.matchLimit) }
            set { regex.matchLimit = UInt32(newValue) }
        }
    }

    static let definition = StageDefinition.transform(
        "regex",
        summary: "Keeps or drops lines by PCRE2 patterns (JIT) and extracts named captures into fields.",
        options: [
            StageOption<Declared>.stringList(
                "include", \.include, "Keep lines matching any of these patterns (default: keep all)."),
            .stringList("exclude", \.exclude, "Drop lines matching any of these patterns."),
            .stringList(
                "extract", \.extract,
                "Patterns whose named groups `(?<name>...)` become record fields; `host` also sets the host."),
            .boolean(
                "case_insensitive", \.regex.caseInsensitive, "Match without regard to case (`PCRE2_CASELESS`)."),
            .boolean(
                "utf", \.regex.utf,
                "Match Unicode code points (`PCRE2_UTF` + `PCRE2_MATCH_INVALID_UTF`) instead of bytes."),
            .string(
                "field", \.field, "Match this record field instead of the line (a record without it does not match)."),
            .integer(
                "match_limit", \.matchLimit, in: 1...Int(UInt32.max),
                "Most backtracking steps per match; guards against catastrophic patterns."),
            .choice(
                "on_limit", \.onLimit,
                "When a match hits the limit: `keep` or `drop` the line (counted as `match_limit_hits`), or `fail` the pipeline."
            ),
        ]
    ) { declared, options in
        // Every pattern is compiled, so that each bad one is reported.
        var problems: [OptionError] = []
        func compile(_ name: String, _ patterns: [String]) -> [PCRE2Regex] {
            patterns.enumerated().compactMap { index, pattern in
                do throws(RegexCompileError) {
                    return try PCRE2Regex(pattern, options: declared.regex)
                } catch {
                    problems.append(
                        options.error(
                            name,
                            item: index,
                            "cannot compile '\(pattern)': \(error.message) at offset \(error.offset)",
                            hint: "PCRE2 syntax; in YAML, single-quote patterns so that backslashes stay as written"
                        ))
                    return nil
                }
            }
        }
        var settings = Options()
        settings.include = compile("include", declared.include)
        settings.exclude = compile("exclude", declared.exclude)
        settings.extract = compile("extract", declared.extract)
        if !problems.isEmpty { throw OptionErrors(problems) }
        settings.field = declared.field
        settings.onLimit = declared.onLimit
        if settings.include.isEmpty, settings.exclude.isEmpty, settings.extract.isEmpty {
            throw options.error("include", "a regex stage needs at least one of include, exclude or extract")
        }
        for (index, regex) in settings.extract.enumerated() where regex.namedGroups.isEmpty {
            throw options.error(
                "extract", item: index, "'\(regex.pattern)' has no named group, so it extracts nothing",
                hint: "name the groups to keep: (?<user>\\w+)")
        }
        return RegexTransform(options: settings)
    }

    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        let includes = options.include.map { $0.makeMatcher() }
        let excludes = options.exclude.map { $0.makeMatcher() }
        let extracts = options.extract.map { $0.makeMatcher() }
        var limitHits = 0
        for await var batch in input {
            var failure: MatchLimitError?
            var hits = 0
            batch.removeAll { record in
                var limited = false
                let keep = withMatchedBytes(of: record) { bytes in
                    guard let bytes else { return includes.isEmpty }
                    var included = includes.isEmpty
                    for matcher in includes where !included {
                        switch matcher.match(bytes) {
                        case .match: included = true
                        case .noMatch: break
                        case .limitExceeded, .error:
                            limited = true
                            if failure == nil {
                                failure = MatchLimitError(pattern: matcher.regex.pattern, origin: record.origin)
                            }
                        }
                    }
                    guard included || limited else { return false }
                    for matcher in excludes {
                        switch matcher.match(bytes) {
                        case .match: return false
                        case .noMatch: break
                        case .limitExceeded, .error:
                            limited = true
                            if failure == nil {
                                failure = MatchLimitError(pattern: matcher.regex.pattern, origin: record.origin)
                            }
                        }
                    }
                    return included || limited
                }
                if limited {
                    hits += 1
                    return options.onLimit == .drop
                }
                return !keep
            }
            if hits > 0 {
                if options.onLimit == .fail, let failure { throw failure }
                context.metrics.count("match_limit_hits", by: hits)
                if limitHits == 0 {
                    context.logger.warning(
                        "a regex hit its match limit; the line was \(options.onLimit == .drop ? "dropped" : "kept") (counted as match_limit_hits): \(failure?.pattern ?? "")"
                    )
                }
                limitHits += hits
            }
            if !extracts.isEmpty {
                for index in batch.records.indices {
                    try extract(into: &batch.records[index], with: extracts)
                }
            }
            if !batch.isEmpty {
                try await output.send(batch)
            }
        }
    }

    private func extract(into record: inout Record, with matchers: [PCRE2Matcher]) throws {
        var found: [(String, String)] = []
        withMatchedBytes(of: record) { bytes in
            guard let bytes else { return }
            for matcher in matchers {
                guard matcher.match(bytes) == .match else { continue }
                for capture in matcher.namedCaptures(in: bytes) {
                    let value = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[capture.range]), as: UTF8.self)
                    found.append((capture.name, value))
                }
            }
        }
        for (name, value) in found {
            record.fields[name] = value
            if name == "host" { record.host = value }
        }
    }

    /// Runs `body` over the bytes to match: the line, or the configured field
    /// (`nil` when the record has no such field).
    @inline(__always)
    private func withMatchedBytes<Result>(of record: Record, _ body: (UnsafeRawBufferPointer?) -> Result) -> Result {
        if let field = options.field {
            guard var value = record.fields[field] else { return body(nil) }
            return value.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
        return record.bytes.withUnsafeReadableBytes { body($0) }
    }
}

extension RegexTransform: FieldProducer {
    /// The named groups of the `extract` patterns.
    public var producedFields: Set<String> {
        Set(options.extract.flatMap { $0.namedGroups.map(\.name) })
    }
}
