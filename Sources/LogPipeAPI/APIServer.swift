import Foundation
import LogPipe
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP endpoint of a running pipeline: `GET /metrics` (Prometheus
/// text format), `/health` (the process and its runtime turn) and `/ready`
/// (the pipeline can work: HTTP 503 with the reasons when not), each
/// answered by an ``APIResponder``.
///
/// A small HTTP/1.1 server on SwiftNIO's `NIOHTTP1`, bound to one address
/// (loopback by default: the endpoint has no authentication).
public final class APIServer: Sendable {
    private let channel: any Channel
    /// The address it listens on (with the port the system chose for port 0).
    public let address: String

    private init(channel: any Channel, address: String) {
        self.channel = channel
        self.address = address
    }

    /// Splits `host:port` (`[::1]:9598` for IPv6).
    /// - Throws: ``APIServerError/invalidAddress(_:)``.
    public static func parse(address: String) throws -> (host: String, port: Int) {
        guard let parsed = Units.hostAndPort(address) else { throw APIServerError.invalidAddress(address) }
        return parsed
    }

    /// Listens on `address` (`host:port`) and answers with `responder`.
    /// - Throws: ``APIServerError`` when the address is invalid or cannot be bound.
    public static func start(address: String, responder: APIResponder, logger: Logger) async throws -> APIServer {
        let (host, port) = try parse(address: address)
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(HTTPHandler(responder: responder))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw APIServerError.cannotListen(address: address, reason: Self.reason(error))
        }
        let bound = channel.localAddress.map { local in
            let shownHost = local.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? host
            return "\(shownHost):\(local.port ?? port)"
        }
        let endpoints = "/metrics, /health, /ready" + (responder.reload == nil ? "" : ", POST /reload")
        logger.info("API listening on http://\(bound ?? address) (\(endpoints))")
        return APIServer(channel: channel, address: bound ?? address)
    }

    static func reason(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? SocketAddressError { return "\(error)" }
        return "\(error)"
    }

    /// Stops listening; requests under way are answered first.
    public func stop() async {
        try? await channel.close()
    }
}

/// Why the API endpoint could not start.
public enum APIServerError: Error, CustomStringConvertible, Equatable {
    /// Not `host:port`.
    case invalidAddress(String)
    /// Binding failed (the address is in use, not on this machine, …).
    case cannotListen(address: String, reason: String)

    public var description: String {
        switch self {
        case .invalidAddress(let address):
            "API address '\(address)' is not host:port; for example 127.0.0.1:9598 (api.address or --api-address)"
        case .cannotListen(let address, let reason):
            "cannot listen on \(address) for the API: \(reason); choose another address (api.address or --api-address) or stop what uses it"
        }
    }
}

/// One connection: each request answered in order by the responder.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: APIResponder
    private var request: HTTPRequestHead?

    init(responder: APIResponder) {
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // no endpoint takes a body
        case .end:
            guard let head = request else { return }
            request = nil
            let responder = self.responder
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                await responder.respond(method: head.method.rawValue, path: head.uri)
            }.whenSuccess { response in
                let (handler, context) = loopBound.value
                handler.write(response, for: head, context: context)
            }
        }
    }

    private func write(_ response: APIResponder.Response, for request: HTTPRequestHead, context: ChannelHandlerContext)
    {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = request.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let head = HTTPResponseHead(
            version: request.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
