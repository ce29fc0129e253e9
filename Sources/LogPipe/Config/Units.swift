import LogPipeBase

/// Parsers for the duration and size notations of pipeline files.
public enum Units {
    /// Parses a duration such as `500ms`, `30s`, `5m`, `2h`, `1d` or `1h30m`.
    ///
    /// Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`. A bare `0` means zero.
    /// - Returns: `nil` when the text is not a duration.
    public static func duration(_ text: String) -> Duration? {
        let text = text.trimmingSpaces
        if text == "0" { return .zero }
        var total = Duration.zero
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unit.count)
            let nanosecondsPerUnit: Double
            switch unit {
            case "ns": nanosecondsPerUnit = 1
            case "us", "µs": nanosecondsPerUnit = 1e3
            case "ms": nanosecondsPerUnit = 1e6
            case "s": nanosecondsPerUnit = 1e9
            case "m": nanosecondsPerUnit = 60e9
            case "h": nanosecondsPerUnit = 3600e9
            case "d": nanosecondsPerUnit = 86400e9
            default: return nil
            }
            let nanoseconds = value * nanosecondsPerUnit
            guard nanoseconds.isFinite, nanoseconds < 9e18 else { return nil }
            total += .nanoseconds(Int64(nanoseconds))
        }
        return total
    }

    /// Parses a size such as `64KiB`, `1MiB`, `2GiB`, `500KB` or `4096`.
    ///
    /// `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024, `KB`/`MB`/`GB`/`TB` powers of
    /// 1000 (also written lower-case, or as `k`, `K`), and a bare number is bytes.
    /// - Returns: `nil` when the text is not a size.
    public static func size(_ text: String) -> Int? {
        let text = text.trimmingSpaces
        let number = text.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        guard !number.isEmpty, let value = Double(number) else { return nil }
        let unit = text.dropFirst(number.count).trimmingPrefixSpaces
        let multiplier: Double
        switch unit.lowercased() {
        case "", "b": multiplier = 1
        case "k", "kb": multiplier = 1e3
        case "m", "mb": multiplier = 1e6
        case "g", "gb": multiplier = 1e9
        case "t", "tb": multiplier = 1e12
        case "kib": multiplier = 1024
        case "mib": multiplier = 1024 * 1024
        case "gib": multiplier = 1024 * 1024 * 1024
        case "tib": multiplier = 1024 * 1024 * 1024 * 1024
        default: return nil
        }
        let bytes = value * multiplier
        guard bytes.isFinite, bytes < 9e18, bytes == bytes.rounded() else { return nil }
        return Int(bytes)
    }

    /// Formats a size the way pipeline files write it: the largest binary
    /// unit that divides it (`256KiB`, `1MiB`), else bytes (`1000`).
    public static func formatSize(_ bytes: Int) -> String {
        for (unit, factor) in [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        where bytes > 0 && bytes % factor == 0 {
            return "\(bytes / factor)\(unit)"
        }
        return String(bytes)
    }

    /// Splits `host:port` (`[::1]:9598` for IPv6; port 0 means any free
    /// one), or nil when `text` is not that: what `api.address` takes.
    public static func hostAndPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(" ") else { return nil }
        return (host, port)
    }

    /// Formats a duration the way pipeline files write it (`30s`, `500ms`).
    public static func format(_ duration: Duration) -> String {
        let milliseconds = duration.inMilliseconds
        if milliseconds % 86_400_000 == 0, milliseconds > 0 { return "\(milliseconds / 86_400_000)d" }
        if milliseconds % 3_600_000 == 0, milliseconds > 0 { return "\(milliseconds / 3_600_000)h" }
        if milliseconds % 60_000 == 0, milliseconds > 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    var trimmingPrefixSpaces: Substring {
        Substring(self.drop { $0 == " " })
    }
}
