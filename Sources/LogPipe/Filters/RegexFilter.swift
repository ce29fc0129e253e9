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
public struct RegexFilter: Transform {
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

    static let definition = StageDefinition.transform(
        "regex",
        summary: "Keeps or drops lines by PCRE2 patterns (JIT) and extracts named captures into fields.",
        options: [
            OptionSpec("include", .stringList, "Keep lines matching any of these patterns (default: keep all)."),
            OptionSpec("exclude", .stringList, "Drop lines matching any of these patterns."),
            OptionSpec(
                "extract", .stringList,
                "Patterns whose named groups `(?<name>...)` become record fields; `host` also sets the host."),
            OptionSpec(
                "case_insensitive", .boolean, default: "false", "Match without regard to case (`PCRE2_CASELESS`)."),
            OptionSpec(
                "utf", .boolean, default: "false",
                "Match Unicode code points (`PCRE2_UTF` + `PCRE2_MATCH_INVALID_UTF`) instead of bytes."),
            OptionSpec(
                "field", .string, "Match this record field instead of the line (a record without it does not match)."),
            OptionSpec(
                "match_limit", .integer(1...Int(UInt32.max)), default: "1000000",
                "Most backtracking steps per match; guards against catastrophic patterns."),
            OptionSpec(
                "on_limit", .choice(MatchLimitPolicy.allCases.map(\.rawValue)), default: "keep",
                "When a match hits the limit: `keep` or `drop` the line (counted as `match_limit_hits`), or `fail` the pipeline."
            ),
        ]
    ) { options in
        var regexOptions = PCRE2Regex.Options()
        regexOptions.caseInsensitive = options.boolean("case_insensitive")
        regexOptions.utf = options.boolean("utf")
        regexOptions.matchLimit = UInt32(options.integer("match_limit"))
        // Every pattern is compiled, so that each bad one is reported.
        var problems: [OptionError] = []
        func compile(_ name: String) -> [PCRE2Regex] {
            options.stringList(name).enumerated().compactMap { index, pattern in
                do throws(RegexCompileError) {
                    return try PCRE2Regex(pattern, options: regexOptions)
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
        settings.include = compile("include")
        settings.exclude = compile("exclude")
        settings.extract = compile("extract")
        if !problems.isEmpty { throw OptionErrors(problems) }
        settings.field = options.string("field")
        settings.onLimit = MatchLimitPolicy(rawValue: options.string("on_limit") ?? "keep") ?? .keep
        if settings.include.isEmpty, settings.exclude.isEmpty, settings.extract.isEmpty {
            throw options.error("include", "a regex stage needs at least one of include, exclude or extract")
        }
        for (index, regex) in settings.extract.enumerated() where regex.namedGroups.isEmpty {
            throw options.error(
                "extract", item: index, "'\(regex.pattern)' has no named group, so it extracts nothing",
                hint: "name the groups to keep: (?<user>\\w+)")
        }
        return RegexFilter(options: settings)
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
                let keep = withSubject(of: record) { bytes in
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
        withSubject(of: record) { bytes in
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
    private func withSubject<Result>(of record: Record, _ body: (UnsafeRawBufferPointer?) -> Result) -> Result {
        if let field = options.field {
            guard var value = record.fields[field] else { return body(nil) }
            return value.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
        return record.bytes.withUnsafeReadableBytes { body($0) }
    }
}

extension RegexFilter: FieldProducer {
    /// The named groups of the `extract` patterns.
    public var producedFields: Set<String> {
        Set(options.extract.flatMap { $0.namedGroups.map(\.name) })
    }
}
