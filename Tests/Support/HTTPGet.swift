import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A blocking HTTP/1.1 GET for tests of the API endpoint: returns the
/// status and the body, or nil when nothing listens (or no full answer came).
public func httpGet(_ address: String, _ path: String) -> (status: Int, body: String)? {
    httpRequest("GET", address, path)
}

/// A blocking HTTP/1.1 request without a body (`POST /reload`); as ``httpGet(_:_:)``.
public func httpRequest(_ method: String, _ address: String, _ path: String) -> (status: Int, body: String)? {
    guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
        return nil
    }
    let host = String(address[..<colon])
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 120, tv_usec: 0)  // a reload may wait for a drain
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var socketAddress = sockaddr_in()
    socketAddress.sin_family = sa_family_t(AF_INET)
    socketAddress.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &socketAddress.sin_addr) == 1 else { return nil }
    let connected = withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return nil }
    let request = Array(
        "\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &chunk, chunk.count, 0)
        if count <= 0 { break }
        response += chunk[..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first,
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }),
        let bodyStart = text.range(of: "\r\n\r\n")
    else { return nil }
    return (status, String(text[bodyStart.upperBound...]))
}
