import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Tells systemd about the service's state (`Type=notify`): `READY=1` once
/// the pipeline runs, `STATUS=` lines, `STOPPING=1` when it drains. The
/// protocol of sd_notify(3): datagrams to the Unix socket named in
/// `NOTIFY_SOCKET` (a leading `@` is the abstract namespace). Without that
/// variable (not started by systemd) it does nothing.
struct SystemdNotifier: Sendable {
    let path: String?

    init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var isActive: Bool { path != nil }

    /// Sends `message` (newline-separated `KEY=value` lines); returns whether it was sent.
    @discardableResult
    func notify(_ message: String) -> Bool {
        #if os(Linux)
            guard let path else { return false }
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            var bytes = Array(path.utf8)
            let abstract = bytes.first == UInt8(ascii: "@")
            if abstract { bytes[0] = 0 }
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            guard bytes.count < capacity else { return false }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
            }
            // An abstract name's length counts exactly; a path's includes its NUL.
            let length = MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1)
            let payload = Array(message.utf8)
            let sent = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    payload.withUnsafeBytes {
                        sendto(fd, $0.baseAddress, $0.count, 0, socketAddress, socklen_t(length))
                    }
                }
            }
            return sent == payload.count
        #else
            return false
        #endif
    }
}
