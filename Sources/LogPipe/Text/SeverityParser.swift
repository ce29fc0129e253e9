/// Recognises the severity of a log line from its bytes, without decoding.
///
/// Formats, tried in this order:
/// 1. syslog `<PRI>` at the start (RFC 3164 and RFC 5424): severity = PRI mod 8.
/// 2. JSON objects (`{` first): the top-level key `level`, `severity`, `lvl`
///    or `loglevel` (any case), a name or a number (0–7 syslog, 10–60
///    bunyan/pino). Keys inside nested objects and words in the message are
///    ignored.
/// 3. logfmt (the first token is `key=value`): the key `level`, `lvl`,
///    `severity` or `loglevel`; quoted values are skipped whole.
/// 4. Plain text: the first level word in the first `searchLimit` bytes, as a
///    whole token: delimited by the line's start or end, whitespace, or one of
///    `[ ] ( ) < > | : , ;`. `ERRORS=0`, `error_count`, `/api/error` and
///    `NO_ERROR` are not level words.
///
/// Level words (any case): `emerg`, `emergency`, `panic`, `alert`, `crit`,
/// `critical`, `fatal` (critical), `err`, `error`, `warn`, `warning`,
/// `notice`, `info`, `informational`, `debug`, `trace`.
public enum SeverityParser {
    /// The severity named by `word` (case-insensitive), if it is a level word.
    public static func level(named word: some Collection<UInt8>) -> Severity? {
        guard let key = packedLowercase(word) else { return nil }
        return levelWords[key]
    }

    /// Up to 15 ASCII letters, lower-cased and packed into an integer: a
    /// lookup key that costs no allocation (this runs for many words per line).
    @inline(__always)
    static func packedLowercase(_ word: some Collection<UInt8>) -> UInt128? {
        guard word.count >= 3, word.count <= 15 else { return nil }
        var key: UInt128 = 0
        for byte in word {
            let folded = byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
            guard folded >= 0x61 && folded <= 0x7A else { return nil }
            key = key << 8 | UInt128(folded)
        }
        return key
    }

    static let levelWords: [UInt128: Severity] = {
        let words: [(String, Severity)] = [
            ("emerg", .emergency), ("emergency", .emergency), ("panic", .emergency), ("alert", .alert),
            ("crit", .critical), ("critical", .critical), ("fatal", .critical), ("err", .error), ("error", .error),
            ("warn", .warning), ("warning", .warning), ("notice", .notice), ("info", .info),
            ("informational", .info), ("debug", .debug), ("trace", .trace),
        ]
        return Dictionary(uniqueKeysWithValues: words.map { (packedLowercase(Array($0.0.utf8))!, $0.1) })
    }()

    /// Keys that hold the level in JSON and logfmt lines.
    static let levelKeys: Set<UInt128> = Set(
        ["level", "severity", "lvl", "loglevel"].map { packedLowercase(Array($0.utf8))! })

    @inline(__always)
    static func isLevelKey(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let packed = packedLowercase(key) else { return false }
        return levelKeys.contains(packed)
    }

    /// The severity of `line`, or `nil` when none is recognisable.
    public static func parse(_ line: UnsafeRawBufferPointer, searchLimit: Int = 256) -> Severity? {
        let bytes = line.bindMemory(to: UInt8.self)
        guard let first = bytes.first else { return nil }
        if first == UInt8(ascii: "<"), let severity = syslogPriority(bytes) { return severity }
        var start = 0
        while start < bytes.count, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        if start < bytes.count, bytes[start] == UInt8(ascii: "{") {
            return jsonLevel(bytes, from: start)
        }
        if isLogfmt(bytes) {
            return logfmtLevel(bytes)
        }
        return plainWord(bytes, limit: searchLimit)
    }

    /// Whether `line` continues the previous record: a stack frame
    /// (whitespace then `at ` or `File "`), `... N more`, `Caused by:`, or an
    /// exception header such as `java.lang.IllegalStateException: ...`.
    public static func isContinuation(_ line: UnsafeRawBufferPointer) -> Bool {
        let bytes = line.bindMemory(to: UInt8.self)
        var index = 0
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
        let rest = UnsafeBufferPointer(rebasing: bytes[index...])
        if hasPrefix(rest, "Caused by:") || hasPrefix(rest, "...") { return true }
        if index > 0, hasPrefix(rest, "at ") || hasPrefix(rest, "File \"") { return true }
        guard index == 0 else { return false }
        // An exception header: a dotted identifier ending in Exception or
        // Error, followed by ':' or the end of the line.
        var end = 0
        while end < bytes.count,
            isIdentifierByte(bytes[end]) || bytes[end] == UInt8(ascii: ".") || bytes[end] == UInt8(ascii: "$")
        {
            end += 1
        }
        guard end == bytes.count || bytes[end] == UInt8(ascii: ":") else { return false }
        let name = UnsafeBufferPointer(rebasing: bytes[..<end])
        return name.contains(UInt8(ascii: ".")) && (hasSuffix(name, "Exception") || hasSuffix(name, "Error"))
    }

    // MARK: - Formats

    static func syslogPriority(_ bytes: UnsafeBufferPointer<UInt8>) -> Severity? {
        var value = 0
        var index = 1
        while index < bytes.count, index <= 4, bytes[index] >= 0x30, bytes[index] <= 0x39 {
            value = value * 10 + Int(bytes[index] - 0x30)
            index += 1
        }
        guard index > 1, index < bytes.count, bytes[index] == UInt8(ascii: ">"), value <= 191 else { return nil }
        return Severity(rawValue: value % 8)
    }

    static func jsonLevel(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Severity? {
        var depth = 0
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                index += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth <= 0 { return nil }
                index += 1
            case UInt8(ascii: "\""):
                let stringStart = index + 1
                guard let stringEnd = endOfString(bytes, from: stringStart) else { return nil }
                index = stringEnd + 1
                guard depth == 1 else { continue }
                var after = index
                while after < bytes.count, bytes[after] == 0x20 || bytes[after] == 0x09 { after += 1 }
                guard after < bytes.count, bytes[after] == UInt8(ascii: ":") else { continue }
                let key = UnsafeBufferPointer(rebasing: bytes[stringStart..<stringEnd])
                guard isLevelKey(key) else {
                    index = after + 1
                    continue
                }
                var valueStart = after + 1
                while valueStart < bytes.count, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 {
                    valueStart += 1
                }
                guard valueStart < bytes.count else { return nil }
                if bytes[valueStart] == UInt8(ascii: "\"") {
                    guard let valueEnd = endOfString(bytes, from: valueStart + 1) else { return nil }
                    let value = UnsafeBufferPointer(rebasing: bytes[(valueStart + 1)..<valueEnd])
                    return level(named: value) ?? numericLevel(value)
                }
                var valueEnd = valueStart
                while valueEnd < bytes.count, bytes[valueEnd] >= 0x30, bytes[valueEnd] <= 0x39 { valueEnd += 1 }
                return numericLevel(UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]))
            default:
                index += 1
            }
        }
        return nil
    }

    /// The index of the closing quote of a JSON string whose content starts at `start`.
    static func endOfString(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index
            default: index += 1
            }
        }
        return nil
    }

    /// 0–7: syslog severities; 10–60: bunyan/pino (trace 10, debug 20,
    /// info 30, warn 40, error 50, fatal 60).
    static func numericLevel(_ digits: UnsafeBufferPointer<UInt8>) -> Severity? {
        guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        let value = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        switch value {
        case 0...7: return Severity(rawValue: value)
        case 10..<20: return .trace
        case 20..<30: return .debug
        case 30..<40: return .info
        case 40..<50: return .warning
        case 50..<60: return .error
        case 60...: return .critical
        default: return nil
        }
    }

    static func isLogfmt(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        while index < bytes.count, isIdentifierByte(bytes[index]) || bytes[index] == UInt8(ascii: ".") { index += 1 }
        return index > 0 && index < bytes.count && bytes[index] == UInt8(ascii: "=")
    }

    static func logfmtLevel(_ bytes: UnsafeBufferPointer<UInt8>) -> Severity? {
        var index = 0
        while index < bytes.count {
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            let keyStart = index
            while index < bytes.count, bytes[index] != UInt8(ascii: "="), bytes[index] != 0x20 { index += 1 }
            let key = UnsafeBufferPointer(rebasing: bytes[keyStart..<index])
            guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else { continue }
            index += 1
            let value: UnsafeBufferPointer<UInt8>
            if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
                let end = endOfString(bytes, from: index + 1) ?? bytes.count
                value = UnsafeBufferPointer(rebasing: bytes[(index + 1)..<end])
                index = end + 1
            } else {
                let start = index
                while index < bytes.count, bytes[index] != 0x20 { index += 1 }
                value = UnsafeBufferPointer(rebasing: bytes[start..<index])
            }
            if isLevelKey(key) {
                return level(named: value) ?? numericLevel(value)
            }
        }
        return nil
    }

    static func plainWord(_ bytes: UnsafeBufferPointer<UInt8>, limit: Int) -> Severity? {
        let end = min(bytes.count, limit)
        var index = 0
        while index < end {
            guard isLetter(bytes[index]) else {
                index += 1
                continue
            }
            let start = index
            while index < bytes.count, isIdentifierByte(bytes[index]) { index += 1 }
            let before = start == 0 ? nil : bytes[start - 1]
            let after = index == bytes.count ? nil : bytes[index]
            if isDelimiter(before), isDelimiter(after),
                let severity = level(named: UnsafeBufferPointer(rebasing: bytes[start..<index]))
            {
                return severity
            }
        }
        return nil
    }

    @inline(__always) static func isLetter(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }

    @inline(__always) static func isIdentifierByte(_ byte: UInt8) -> Bool {
        isLetter(byte) || (byte >= 0x30 && byte <= 0x39) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// Bytes that may stand around a level word; `nil` is the line's start or end.
    @inline(__always) static func isDelimiter(_ byte: UInt8?) -> Bool {
        guard let byte else { return true }
        switch byte {
        case 0x20, 0x09, UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "<"),
            UInt8(ascii: ">"), UInt8(ascii: "|"), UInt8(ascii: ":"), UInt8(ascii: ","), UInt8(ascii: ";"):
            return true
        default:
            return false
        }
    }

    static func hasPrefix(_ bytes: UnsafeBufferPointer<UInt8>, _ prefix: StaticString) -> Bool {
        guard bytes.count >= prefix.utf8CodeUnitCount else { return false }
        return prefix.withUTF8Buffer { expected in
            expected.indices.allSatisfy { bytes[$0] == expected[$0] }
        }
    }

    static func hasSuffix(_ bytes: UnsafeBufferPointer<UInt8>, _ suffix: StaticString) -> Bool {
        let count = suffix.utf8CodeUnitCount
        guard bytes.count >= count else { return false }
        return suffix.withUTF8Buffer { expected in
            expected.indices.allSatisfy { bytes[bytes.count - count + $0] == expected[$0] }
        }
    }
}
