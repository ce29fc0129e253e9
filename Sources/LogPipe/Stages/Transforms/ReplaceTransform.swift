import NIOCore

/// Rewrites each line with a PCRE2 substitution: `pattern` matched, its
/// match replaced by `with` (`$1`, `${name}`, `$$`), the first match or
/// every one. Lines without a match pass unchanged; replaced lines are
/// counted as `replacements`.
public struct ReplaceTransform: Transform {
    /// The options as a pipeline file gives them.
    public struct Settings: StageSettings {
        /// The PCRE2 pattern.
        public var pattern = ""
        /// The replacement.
        public var with = ""
        /// Every match, not only the first.
        public var all = true
        /// Flags the pattern is compiled with.
        public var regex = PCRE2Regex.Options()
        /// When a match hits the match limit.
        public var onLimit: MatchLimitPolicy = .keep

        public init() {}
    }

    static let definition = StageDefinition.transform(
        "replace",
        summary:
            "Rewrites each line with a PCRE2 substitution (`$1`, `${name}`); lines without a match pass unchanged.",
        options: [
            StageOption<Settings>.string("pattern", \.pattern, required: true, "The PCRE2 pattern to replace."),
            .string(
                "with", \.with, required: true,
                "The replacement: `$1` for a group, `$name` for a named group (in a pipeline file `${...}` is an environment variable: write `$${name}`), `$$$$` for a dollar sign; empty removes the match."
            ),
            .boolean("all", \.all, "Replace every match (`false`: only the first)."),
            .boolean("case_insensitive", \.regex.caseInsensitive, "Match without regard to case."),
            .choice(
                "on_limit", \.onLimit,
                "When a match hits the match limit: `keep` the line unchanged or `drop` it (counted as `match_limit_hits`), or `fail` the pipeline."
            ),
        ]
    ) { settings, options in
        let regex: PCRE2Regex
        do throws(RegexCompileError) {
            regex = try PCRE2Regex(settings.pattern, options: settings.regex)
        } catch {
            throw options.error(
                "pattern", "cannot compile '\(settings.pattern)': \(error.message) at offset \(error.offset)",
                hint: "PCRE2 syntax; in YAML, single-quote patterns so that backslashes stay as written")
        }
        if let problem = regex.checkReplacement(settings.with) {
            throw options.error(
                "with", "'\(settings.with)' \(problem)",
                hint: "groups are $1 or $name; a dollar sign is $$ ($$$$ in a pipeline file)")
        }
        return ReplaceTransform(regex: regex, settings: settings)
    }

    let regex: PCRE2Regex
    let settings: Settings

    /// Creates a replace stage from a compiled pattern.
    public init(regex: PCRE2Regex, settings: Settings) {
        self.regex = regex
        self.settings = settings
    }

    /// It rewrites lines; it sets no fields.
    public var producedFields: Set<String> { [] }

    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        let matcher = regex.makeMatcher()
        let replacement = Array(settings.with.utf8)
        // Reused for every line: only a replaced line allocates (its new bytes).
        var scratch: [UInt8] = []
        var warned = false
        for await var batch in input {
            var replaced = 0
            var limited: [Int] = []
            for index in batch.records.indices {
                let result = batch.records[index].bytes.withUnsafeReadableBytes {
                    matcher.substitute($0, replacement: replacement, global: settings.all, into: &scratch)
                }
                guard let (count, length) = result else {
                    limited.append(index)
                    continue
                }
                if count > 0 {
                    replaced += 1
                    batch.records[index].bytes = ByteBuffer(bytes: scratch[..<length])
                }
            }
            if !limited.isEmpty, settings.onLimit == .drop {
                // removeAll visits the records in order, once each.
                var position = 0
                var next = 0
                batch.removeAll { _ in
                    defer { position += 1 }
                    guard next < limited.count, limited[next] == position else { return false }
                    next += 1
                    return true
                }
            }
            if let first = limited.first {
                if settings.onLimit == .fail {
                    throw RegexTransform.MatchLimitError(pattern: regex.pattern, origin: batch.records[first].origin)
                }
                context.metrics.count("match_limit_hits", by: limited.count)
                if !warned {
                    warned = true
                    context.logger.warning(
                        "the replace pattern hit its match limit; the line was \(settings.onLimit == .drop ? "dropped" : "kept unchanged") (counted as match_limit_hits): \(regex.pattern)"
                    )
                }
            }
            if replaced > 0 { context.metrics.count("replacements", by: replaced) }
            if !batch.records.isEmpty { try await output.send(batch) }
        }
    }
}
