import CPCRE2

/// A pattern PCRE2 could not compile.
public struct RegexCompileError: Error, CustomStringConvertible {
    /// The pattern as written.
    public var pattern: String
    /// PCRE2's message.
    public var message: String
    /// Byte offset in the pattern where PCRE2 stopped.
    public var offset: Int

    public var description: String {
        "cannot compile regex '\(pattern)': \(message) at offset \(offset)"
    }
}

/// A compiled PCRE2 pattern (8-bit library), JIT-compiled when the platform
/// supports it.
///
/// Matching works on bytes, never on `String`s. By default the pattern runs
/// in **byte mode** (no `PCRE2_UTF`): every byte is one character, `\b`, `\w`
/// and `\d` are ASCII, and invalid UTF-8 in a log line cannot make a match
/// fail or misbehave; this is also `pcre2grep`'s and `grep -E`'s default (C
/// locale) and the fastest JIT path. With ``Options/utf`` the pattern is
/// compiled with `PCRE2_UTF | PCRE2_MATCH_INVALID_UTF`: `.` and classes see
/// code points and invalid sequences simply never match a character, still
/// without errors.
///
/// The compiled code is immutable and shared by every worker; each worker
/// matches through its own ``PCRE2Matcher`` (match data, limits, JIT stack).
public final class PCRE2Regex: @unchecked Sendable {
    // @unchecked: `code` is written once in `init` and only read afterwards;
    // PCRE2 documents compiled patterns (JIT included) as shareable between
    // threads. Everything mutable during a match lives in PCRE2Matcher.

    /// Compile and match settings.
    public struct Options: Sendable, Hashable {
        /// `PCRE2_CASELESS`.
        public var caseInsensitive = false
        /// `PCRE2_UTF | PCRE2_MATCH_INVALID_UTF` instead of byte mode.
        public var utf = false
        /// Most backtracking steps one match may take (`pcre2_set_match_limit`).
        public var matchLimit: UInt32 = 1_000_000
        /// Most heap memory one match may use, in KiB (`pcre2_set_heap_limit`).
        public var heapLimitKiB: UInt32 = 20_000

        /// Default options: byte mode, case-sensitive.
        public init() {}
    }

    let code: OpaquePointer
    /// The pattern as written.
    public let pattern: String
    /// The options it was compiled with.
    public let options: Options
    /// Whether the JIT compiler accepted the pattern.
    public let isJIT: Bool
    /// Named capture groups: name and group number, in pattern order.
    public let namedGroups: [(name: String, group: Int)]

    /// Compiles `pattern`.
    /// - Throws: ``RegexCompileError`` with PCRE2's message and offset.
    public init(_ pattern: String, options: Options = Options()) throws(RegexCompileError) {
        self.pattern = pattern
        self.options = options
        var flags: UInt32 = 0
        if options.caseInsensitive { flags |= UInt32(PCRE2_CASELESS) }
        if options.utf { flags |= UInt32(PCRE2_UTF) | UInt32(PCRE2_MATCH_INVALID_UTF) }
        var errorCode: Int32 = 0
        var errorOffset = 0
        let compiled = pattern.utf8CString.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UInt8.self) { bytes in
                pcre2_compile_8(bytes.baseAddress, bytes.count - 1, flags, &errorCode, &errorOffset, nil)
            }
        }
        guard let compiled else {
            throw RegexCompileError(pattern: pattern, message: PCRE2Regex.message(for: errorCode), offset: errorOffset)
        }
        code = compiled
        isJIT = pcre2_jit_compile_8(compiled, UInt32(PCRE2_JIT_COMPLETE)) == 0

        var count: UInt32 = 0
        var entrySize: UInt32 = 0
        var table: UnsafePointer<UInt8>?
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMECOUNT), &count)
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMEENTRYSIZE), &entrySize)
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_NAMETABLE), &table)
        var groups: [(String, Int)] = []
        if let table {
            for index in 0..<Int(count) {
                let entry = table + index * Int(entrySize)
                let group = Int(entry[0]) << 8 | Int(entry[1])
                groups.append((String(cString: entry + 2), group))
            }
        }
        namedGroups = groups.sorted { $0.1 < $1.1 }
    }

    deinit {
        pcre2_code_free_8(code)
    }

    /// A matcher for one worker (one task at a time).
    /// The number of capturing groups.
    public var captureCount: Int {
        var count: UInt32 = 0
        pcre2_pattern_info_8(code, UInt32(PCRE2_INFO_CAPTURECOUNT), &count)
        return Int(count)
    }

    /// Checks a replacement for ``PCRE2Matcher/substitute(_:replacement:global:into:)``:
    /// `$n`, `${n}`, `$name` and `${name}` name a group the pattern has,
    /// `$$` is a dollar sign.
    ///
    /// - Returns: what is wrong, or `nil`.
    public func checkReplacement(_ replacement: String) -> String? {
        let bytes = Array(replacement.utf8)
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "$") else {
                index += 1
                continue
            }
            index += 1
            guard index < bytes.count else { return "ends with a lone '$' (write $$ for a dollar sign)" }
            if bytes[index] == UInt8(ascii: "$") {
                index += 1
                continue
            }
            var name: [UInt8] = []
            if bytes[index] == UInt8(ascii: "{") {
                guard let close = bytes[index...].firstIndex(of: UInt8(ascii: "}")) else {
                    return "has '${' without a closing '}'"
                }
                name = Array(bytes[(index + 1)..<close])
                index = close + 1
            } else {
                // `$12` or `$name`: the longest run of name characters.
                func isNameByte(_ byte: UInt8) -> Bool {
                    (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                        || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                        || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) || byte == UInt8(ascii: "_")
                }
                while index < bytes.count, isNameByte(bytes[index]) {
                    name.append(bytes[index])
                    index += 1
                }
                if name.isEmpty { return "has a '$' not followed by a group (write $$ for a dollar sign)" }
            }
            let text = String(decoding: name, as: UTF8.self)
            if let number = Int(text) {
                if number > captureCount {
                    return "refers to group \(number), but the pattern has \(captureCount) group(s)"
                }
            } else if !namedGroups.contains(where: { $0.name == text }) {
                return "refers to a group named '\(text)' that the pattern does not have"
            }
        }
        return nil
    }

    public func makeMatcher() -> PCRE2Matcher {
        PCRE2Matcher(self)
    }

    static func message(for code: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let length = pcre2_get_error_message_8(code, &buffer, buffer.count)
        guard length > 0 else { return "PCRE2 error \(code)" }
        return String(decoding: buffer.prefix(Int(length)), as: UTF8.self)
    }
}

/// Matches one ``PCRE2Regex`` over byte buffers, reusing its match data.
/// Not thread-safe: make one per worker with ``PCRE2Regex/makeMatcher()``.
public final class PCRE2Matcher {
    /// The outcome of one match.
    public enum Outcome: Equatable, Sendable {
        /// The pattern matched.
        case match
        /// The pattern did not match.
        case noMatch
        /// A match or heap limit stopped the match; whether it would have
        /// matched is unknown.
        case limitExceeded
        /// Another PCRE2 error (its code).
        case error(Int32)
    }

    /// The pattern this matcher runs.
    public let regex: PCRE2Regex
    private let matchData: OpaquePointer
    private let context: OpaquePointer
    private let jitStack: OpaquePointer?
    private static let empty: [UInt8] = [0]

    init(_ regex: PCRE2Regex) {
        self.regex = regex
        matchData = pcre2_match_data_create_from_pattern_8(regex.code, nil)
        context = pcre2_match_context_create_8(nil)
        pcre2_set_match_limit_8(context, regex.options.matchLimit)
        pcre2_set_depth_limit_8(context, regex.options.matchLimit)
        pcre2_set_heap_limit_8(context, regex.options.heapLimitKiB)
        if regex.isJIT {
            // The default 32 KiB JIT stack is too small for some patterns
            // on long lines; running out is reported as a limit, not a crash.
            jitStack = pcre2_jit_stack_create_8(32 * 1024, 1024 * 1024, nil)
            pcre2_jit_stack_assign_8(context, nil, UnsafeMutableRawPointer(jitStack))
        } else {
            jitStack = nil
        }
    }

    deinit {
        pcre2_match_data_free_8(matchData)
        pcre2_match_context_free_8(context)
        if let jitStack { pcre2_jit_stack_free_8(jitStack) }
    }

    /// Matches the pattern against `bytes`.
    @inline(__always)
    public func match(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let result: Int32 = Self.empty.withUnsafeBufferPointer { empty in
            let subject = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty.baseAddress!
            if regex.isJIT {
                return pcre2_jit_match_8(regex.code, subject, bytes.count, 0, 0, matchData, context)
            }
            return pcre2_match_8(regex.code, subject, bytes.count, 0, 0, matchData, context)
        }
        if result >= 0 { return .match }
        switch result {
        case PCRE2_ERROR_NOMATCH: return .noMatch
        case PCRE2_ERROR_MATCHLIMIT, PCRE2_ERROR_DEPTHLIMIT, PCRE2_ERROR_HEAPLIMIT, PCRE2_ERROR_JIT_STACKLIMIT:
            return .limitExceeded
        default: return .error(result)
        }
    }

    /// Replaces the first match of the pattern in `bytes` (every match with
    /// `global`) by `replacement` (`$1`, `${name}`, `$$`), writing the result
    /// into `output` (reused between calls, grown when too small).
    ///
    /// - Returns: the number of replacements and the length of the result
    ///   in `output` (no replacement: 0 and the length is meaningless), or
    ///   `nil` when a match or heap limit stopped it.
    public func substitute(
        _ bytes: UnsafeRawBufferPointer, replacement: [UInt8], global: Bool, into output: inout [UInt8]
    ) -> (count: Int, length: Int)? {
        var flags = UInt32(PCRE2_SUBSTITUTE_OVERFLOW_LENGTH)
        if global { flags |= UInt32(PCRE2_SUBSTITUTE_GLOBAL) }
        if output.isEmpty { output = [UInt8](repeating: 0, count: max(256, bytes.count * 2)) }
        while true {
            var length = output.count
            let result: Int32 = Self.empty.withUnsafeBufferPointer { empty in
                let subject = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty.baseAddress!
                return replacement.withUnsafeBufferPointer { with in
                    output.withUnsafeMutableBufferPointer { out in
                        pcre2_substitute_8(
                            regex.code, subject, bytes.count, 0, flags, matchData, context,
                            with.baseAddress ?? empty.baseAddress!, with.count, out.baseAddress, &length)
                    }
                }
            }
            if result >= 0 { return (Int(result), length) }
            switch result {
            case PCRE2_ERROR_NOMEMORY:
                // `length` is what the result needs.
                output = [UInt8](repeating: 0, count: length + 1)
            case PCRE2_ERROR_MATCHLIMIT, PCRE2_ERROR_DEPTHLIMIT, PCRE2_ERROR_HEAPLIMIT, PCRE2_ERROR_JIT_STACKLIMIT:
                return nil
            default:
                // The replacement was checked when the stage was built
                // (``PCRE2Regex/checkReplacement(_:)``).
                return nil
            }
        }
    }

    /// After a successful ``match(_:)`` of `bytes`, the byte range of each
    /// named group that took part in the match.
    public func namedCaptures(in bytes: UnsafeRawBufferPointer) -> [(name: String, range: Range<Int>)] {
        let ovector = pcre2_get_ovector_pointer_8(matchData)!
        var captures: [(String, Range<Int>)] = []
        for (name, group) in regex.namedGroups {
            let start = ovector[2 * group]
            let end = ovector[2 * group + 1]
            // PCRE2_UNSET is ~0: the group did not participate.
            guard start != ~0, end != ~0, start <= end, end <= bytes.count else { continue }
            captures.append((name, start..<end))
        }
        return captures
    }
}
