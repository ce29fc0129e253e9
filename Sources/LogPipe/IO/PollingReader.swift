import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads a file descriptor on the blocking pool, waking up regularly to
/// notice a shutdown or cancellation.
struct PollingReader: Sendable {
    enum Result: Sendable {
        case data(ByteBuffer)
        case endOfFile
        case stopped
    }

    let fileDescriptor: Int32

    func read(into buffer: ByteBuffer, stop: @escaping @Sendable () -> Bool) async throws -> Result {
        let cancelled = Flag()
        let box = SendableBox(buffer)
        let fd = fileDescriptor
        return try await withTaskCancellationHandler {
            try await BlockingIO.run { () throws -> Result in
                var buffer = box.value
                while true {
                    if stop() || cancelled.isSet { return .stopped }
                    var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&descriptor, 1, 100)
                    if ready < 0 {
                        if errno == EINTR { continue }
                        throw SystemCallError(call: "poll", target: "fd \(fd)", code: errno)
                    }
                    if ready == 0 { continue }
                    var count = 0
                    var code: Int32 = 0
                    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { pointer in
                        count = Glibc.read(fd, pointer.baseAddress!, pointer.count)
                        if count < 0 { code = errno }
                        return max(count, 0)
                    }
                    if count > 0 { return .data(buffer) }
                    if count == 0 { return .endOfFile }
                    if code == EINTR || code == EAGAIN { continue }
                    throw SystemCallError(call: "read", target: "fd \(fd)", code: code)
                }
            }
        } onCancel: {
            cancelled.set()
        }
    }
}
