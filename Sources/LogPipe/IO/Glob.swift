import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Path patterns for the file source: `*`, `?` and `[...]` within one path
/// component (as in the shell, not matching `/` or a leading `.`), and `**`
/// for any number of directories (zero included).
public struct Glob: Sendable, Hashable, CustomStringConvertible {
    /// The pattern as written.
    public let pattern: String
    let components: [Substring]
    let isAbsolute: Bool

    /// Parses `pattern`.
    public init(_ pattern: String) {
        self.pattern = pattern
        self.isAbsolute = pattern.hasPrefix("/")
        self.components = pattern.split(separator: "/", omittingEmptySubsequences: true)
    }

    public var description: String { pattern }

    /// Whether `path` matches the whole pattern.
    public func matches(_ path: String) -> Bool {
        guard path.hasPrefix("/") == isAbsolute else { return false }
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        return Self.match(components[...], parts[...])
    }

    static func match(_ pattern: ArraySlice<Substring>, _ parts: ArraySlice<Substring>) -> Bool {
        guard let head = pattern.first else { return parts.isEmpty }
        if head == "**" {
            // Zero directories, or one more and try again.
            if match(pattern.dropFirst(), parts) { return true }
            guard let first = parts.first, !first.hasPrefix(".") else { return false }
            return match(pattern, parts.dropFirst())
        }
        guard let part = parts.first, componentMatches(head, part) else { return false }
        return match(pattern.dropFirst(), parts.dropFirst())
    }

    static func componentMatches(_ pattern: Substring, _ name: Substring) -> Bool {
        if !hasWildcard(pattern) { return pattern == name }
        return fnmatch(String(pattern), String(name), FNM_PERIOD) == 0
    }

    static func hasWildcard(_ component: Substring) -> Bool {
        component.contains { $0 == "*" || $0 == "?" || $0 == "[" }
    }

    /// The directory below which every match lies (the components before
    /// the first wildcard), for watching.
    public var baseDirectory: String {
        let fixed = components.prefix { !Glob.hasWildcard($0) && $0 != "**" }
        let directories = fixed.count == components.count ? fixed.dropLast() : fixed[...]
        let joined = directories.joined(separator: "/")
        return isAbsolute ? "/" + joined : (joined.isEmpty ? "." : joined)
    }

    /// The regular files that match, sorted. Unreadable directories are
    /// skipped; `**` descends at most `maxDepth` levels and never into
    /// hidden directories.
    public func expand(maxDepth: Int = 32) -> [String] {
        // A set: `**` can reach one file along several paths, and checking
        // an array for it cost a comparison per match (10,000 files: 50
        // million per scan).
        var results: Set<String> = []
        let start = isAbsolute ? "/" : "."
        walk(directory: start, pattern: components[...], depth: 0, maxDepth: maxDepth, into: &results)
        return results.sorted()
    }

    private func walk(
        directory: String, pattern: ArraySlice<Substring>, depth: Int, maxDepth: Int, into results: inout Set<String>
    ) {
        guard let head = pattern.first else { return }
        let rest = pattern.dropFirst()
        func child(_ name: Substring) -> String {
            if directory == "/" { return "/" + name }
            if directory == "." && !isAbsolute { return String(name) }
            return directory + "/" + name
        }
        if head == "**" {
            walk(directory: directory, pattern: rest, depth: depth, maxDepth: maxDepth, into: &results)
            guard depth < maxDepth else { return }
            for name in Self.entries(of: directory) where !name.hasPrefix(".") {
                let path = child(Substring(name))
                if Self.isDirectory(path) {
                    walk(directory: path, pattern: pattern, depth: depth + 1, maxDepth: maxDepth, into: &results)
                }
            }
            return
        }
        let candidates: [Substring] =
            Self.hasWildcard(head)
            ? Self.entries(of: directory).map { Substring($0) }.filter { Self.componentMatches(head, $0) }
            : [head]
        for name in candidates {
            let path = child(name)
            if rest.isEmpty {
                if Self.isRegularFile(path) { results.insert(path) }
            } else if Self.isDirectory(path) {
                walk(directory: path, pattern: rest, depth: depth + 1, maxDepth: maxDepth, into: &results)
            }
        }
    }

    static func entries(of directory: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}
