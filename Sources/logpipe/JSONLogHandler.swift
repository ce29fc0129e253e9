import Foundation
import LogPipeBase
import Logging
import Synchronization

/// Writes each log event to stderr as one JSON object per line (`--log-format
/// json`): `time` (RFC 3339, UTC, milliseconds), `level`, `stage` when the
/// event comes from a stage, `message`, the rest of the metadata under
/// `metadata`, and `module` (the emitting module). Lines are written whole,
/// one `write(2)` each, so concurrent events never interleave.
struct JSONLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let label: String

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = self.metadata
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        let stage = merged.removeValue(forKey: "stage")
        var text = "{\"time\":\"" + Self.timestamp() + "\",\"level\":\"" + event.level.rawValue + "\""
        if let stage { text += ",\"stage\":" + JSONText.quoted("\(stage)") }
        text += ",\"message\":" + JSONText.quoted(event.message.description)
        if let error = event.error { text += ",\"error\":" + JSONText.quoted("\(error)") }
        if !merged.isEmpty {
            text +=
                ",\"metadata\":{"
                + merged.sorted { $0.key < $1.key }.map { JSONText.quoted($0.key) + ":" + Self.json($0.value) }.joined(
                    separator: ",") + "}"
        }
        text += ",\"module\":" + JSONText.quoted(event.source) + "}\n"
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let string): JSONText.quoted(string)
        case .stringConvertible(let convertible): JSONText.quoted(convertible.description)
        case .array(let values): "[" + values.map(json).joined(separator: ",") + "]"
        case .dictionary(let values):
            "{"
                + values.sorted { $0.key < $1.key }.map { JSONText.quoted($0.key) + ":" + json($0.value) }.joined(
                    separator: ",")
                + "}"
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}
