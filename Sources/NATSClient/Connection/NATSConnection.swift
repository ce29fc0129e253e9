import Foundation
import LogPipeBase
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// What the server's INFO says (the fields the client uses).
struct ServerInfo: Decodable, Sendable {
    var server_id: String?
    var max_payload: Int?
    var headers: Bool?
    var proto: Int?
    var jetstream: Bool?
    var tls_required: Bool?
    var tls_available: Bool?
    var auth_required: Bool?
    var nonce: String?
    var connect_urls: [String]?
    var ldm: Bool?
}

/// Events from a channel to its connection.
enum ChannelEvent: Sendable {
    case info(ByteBuffer)
    case message(NATSMessage)
    case pong
    case error(String)
    case writable
    case closed(String)
}

/// Answers PINGs, completes the handshake, forwards the rest.
final class NATSChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ServerOperation
    typealias OutboundOut = ByteBuffer

    private var infoPromise: EventLoopPromise<ByteBuffer>?
    private var connectPromise: EventLoopPromise<Void>?
    private let timeout: TimeAmount
    private let events: @Sendable (ChannelEvent) -> Void
    private var closeReason = "the server closed the connection"

    init(
        infoPromise: EventLoopPromise<ByteBuffer>,
        connectPromise: EventLoopPromise<Void>,
        timeout: TimeAmount,
        events: @escaping @Sendable (ChannelEvent) -> Void
    ) {
        self.infoPromise = infoPromise
        self.connectPromise = connectPromise
        self.timeout = timeout
        self.events = events
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            if handler.infoPromise != nil || handler.connectPromise != nil {
                handler.failHandshake(NATSError.timeout("no answer to the handshake within the connect timeout"))
                context.close(promise: nil)
            }
        }
    }

    private func failHandshake(_ error: any Error) {
        infoPromise?.fail(error)
        infoPromise = nil
        connectPromise?.fail(error)
        connectPromise = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "PONG\r\n")), promise: nil)
        case .info(let info):
            if let promise = infoPromise {
                infoPromise = nil
                promise.succeed(info)
            } else {
                events(.info(info))
            }
        case .pong:
            if let promise = connectPromise, infoPromise == nil {
                connectPromise = nil
                promise.succeed(())
            } else {
                events(.pong)
            }
        case .error(let message):
            if infoPromise != nil || connectPromise != nil {
                failHandshake(NATSError.serverError(message))
            } else {
                events(.error(message))
            }
            closeReason = "the server closed the connection: \(message)"
        case .ok:
            break
        case .message(let message):
            events(.message(message))
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { events(.writable) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failHandshake(NATSError.connectionFailed(servers: [], reason: closeReason))
        events(.closed(closeReason))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closeReason = "\(error)"
        failHandshake(error)
        context.close(promise: nil)
    }
}

/// A connection to a NATS server (or cluster), with reconnects.
///
/// Publishes are encoded into one buffer per call and written with one flush;
/// a publisher waits while the socket is not writable, so memory stays
/// bounded. ``flush(timeout:)`` (PING/PONG) confirms that the server processed
/// everything written before it. When the connection breaks, the client
/// reconnects to the server pool (configured URLs plus the cluster's
/// `connect_urls`) with backoff and jitter, subscribes again, and sends the
/// publishes made meanwhile (up to ``NATSOptions/reconnectBufferBytes``; past
/// that, publishers wait).
public final class NATSConnection: Sendable {
    /// The state machine, and the tasks that act for it.
    private struct Locked {
        var machine: ConnectionStateMachine<any Channel>
        var reconnecting: Task<Void, Never>?
        var keepalive: Task<Void, Never>?
    }

    /// The options the connection was made with.
    public let options: NATSOptions
    let logger: Logger
    private let state: Mutex<Locked>
    private let eventContinuation: AsyncStream<NATSConnectionEvent>.Continuation
    /// Connection life-cycle events (newest 256 kept if nobody reads them).
    public let events: AsyncStream<NATSConnectionEvent>
    private let credentials: NATSCredentials?
    /// The last PING/PONG round trip in nanoseconds (-1: none yet).
    private let lastRoundTrip = Atomic<Int64>(-1)

    /// The last PING/PONG round trip to the server (a ``flush(timeout:)``
    /// or a keepalive PING), or nil before the first.
    public var roundTripTime: Duration? {
        let nanoseconds = lastRoundTrip.load(ordering: .relaxed)
        return nanoseconds < 0 ? nil : .nanoseconds(nanoseconds)
    }

    private func noteRoundTrip(_ duration: Duration) {
        lastRoundTrip.store(duration.inNanoseconds, ordering: .relaxed)
    }
    private let nkey: NKeyPair?

    private init(options: NATSOptions, pool: [ServerAddress], logger: Logger) throws {
        self.options = options
        self.logger = logger
        self.state = Mutex(Locked(machine: ConnectionStateMachine(pool: pool)))
        (events, eventContinuation) = AsyncStream.makeStream(
            of: NATSConnectionEvent.self, bufferingPolicy: .bufferingNewest(256))
        credentials = try options.credsFile.map { try NATSCredentials(file: $0) }
        if let path = options.nkeySeedFile {
            guard let seed = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw NATSError.invalidCredentials(path: path, reason: "cannot read the file")
            }
            do {
                nkey = try NKeyPair(seed: seed.components(separatedBy: .newlines).first { $0.hasPrefix("S") } ?? seed)
            } catch NATSError.invalidCredentials(_, let reason) {
                throw NATSError.invalidCredentials(path: path, reason: reason)
            }
        } else {
            nkey = nil
        }
    }

    /// Connects to the first reachable server of `options.servers`.
    ///
    /// - Throws: ``NATSError/authorizationFailed(server:message:)`` at once
    ///   when credentials are rejected, ``NATSError/connectionFailed(servers:reason:)``
    ///   when no server could be reached, ``NATSError/tlsFailed(server:reason:)``.
    public static func connect(_ options: NATSOptions, logger: Logger = Logger(label: "nats")) async throws
        -> NATSConnection
    {
        let pool = try options.servers.map(ServerAddress.init(parsing:))
        guard !pool.isEmpty else { throw NATSError.connectionFailed(servers: [], reason: "no server URL given") }
        let connection = try NATSConnection(options: options, pool: pool, logger: logger)
        var reasons: [String] = []
        for server in pool {
            do {
                try await connection.establish(server)
                connection.startKeepalive()
                return connection
            } catch let error as NATSError {
                switch error {
                case .authorizationFailed, .tlsFailed, .invalidCredentials: throw error
                default: reasons.append("\(server): \(Self.reason(error))")
                }
            } catch {
                reasons.append("\(server): \(Self.reason(error))")
            }
        }
        throw NATSError.connectionFailed(servers: pool.map(\.description), reason: reasons.joined(separator: "; "))
    }

    static func reason(_ error: any Error) -> String {
        if case NATSError.connectionFailed(_, let reason) = error { return reason }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? NIOConnectionError {
            return error.connectionErrors.first.map { reason($0.error) } ?? "\(error)"
        }
        if error is ChannelError { return "connection closed (\(error))" }
        return "\(error)"
    }

    /// The server's `max_payload`.
    public var maxPayload: Int { state.withLock { $0.machine.info?.max_payload ?? 1024 * 1024 } }

    /// The server currently connected, if any.
    public var connectedServer: String? {
        state.withLock { $0.machine.connectedServer?.description }
    }

    /// Whether the server has JetStream enabled.
    public var serverHasJetStream: Bool { state.withLock { $0.machine.info?.jetstream ?? false } }

    // MARK: - Connecting

    private func establish(_ server: ServerAddress) async throws {
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let generation = try state.withLock { try $0.machine.attemptStarted() }
        do {
            try await establish(server, generation: generation, on: eventLoop)
        } catch {
            state.withLock { $0.machine.attemptFailed(generation: generation) }
            throw error
        }
    }

    private func establish(_ server: ServerAddress, generation: Int, on eventLoop: any EventLoop) async throws {
        let infoPromise = eventLoop.makePromise(of: ByteBuffer.self)
        let connectPromise = eventLoop.makePromise(of: Void.self)
        let timeout = TimeAmount.nanoseconds(options.connectTimeout.inNanoseconds)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                .channelInitializer { [self] channel in
                    // Strong: the channel's pipeline is torn down when it closes.
                    let events: @Sendable (ChannelEvent) -> Void = { event in self.handle(event, generation: generation)
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(NATSDecoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            NATSChannelHandler(
                                infoPromise: infoPromise, connectPromise: connectPromise, timeout: timeout,
                                events: events)
                        )
                    }
                }
                .connect(host: server.host, port: server.port).get()
        } catch {
            infoPromise.fail(error)
            connectPromise.fail(error)
            throw NATSError.connectionFailed(servers: [server.description], reason: Self.reason(error))
        }
        do {
            try state.withLock { try $0.machine.channelConnected(generation: generation) }
            let infoBytes = try await infoPromise.futureResult.get()
            let info = try JSONDecoder().decode(ServerInfo.self, from: Data(infoBytes.readableBytesView))
            let wantsTLS = server.tls || options.tls != nil || info.tls_required == true
            if wantsTLS {
                guard info.tls_required == true || info.tls_available == true else {
                    throw NATSError.tlsFailed(
                        server: server.description,
                        reason: "the server does not offer TLS; use a nats:// URL without tls settings")
                }
                try await upgradeToTLS(channel, server: server)
            } else if info.tls_required == true {
                throw NATSError.tlsFailed(server: server.description, reason: "the server requires TLS")
            }
            var handshake = ByteBuffer()
            handshake.writeStaticString("CONNECT ")
            handshake.writeBytes(try connectJSON(info: info, server: server, tls: wantsTLS))
            handshake.writeStaticString("\r\nPING\r\n")
            // Not awaited: if the write fails (a TLS handshake error closes
            // the channel), the connect promise carries the real reason.
            channel.writeAndFlush(handshake, promise: nil)
            try await connectPromise.futureResult.get()
            try activate(channel, info: info, server: server, generation: generation)
        } catch {
            channel.close(promise: nil)
            throw classify(error, server: server)
        }
    }

    private func classify(_ error: any Error, server: ServerAddress) -> any Error {
        switch error {
        case NATSError.serverError(let message):
            let lower = message.lowercased()
            if lower.contains("authorization") || lower.contains("authentication") || lower.contains("user") {
                return NATSError.authorizationFailed(server: server.description, message: message)
            }
            if lower.contains("tls") { return NATSError.tlsFailed(server: server.description, reason: message) }
            return NATSError.connectionFailed(servers: [server.description], reason: message)
        case let error as NATSError:
            return error
        case let error as NIOSSLError:
            return NATSError.tlsFailed(server: server.description, reason: "\(error)")
        case let error as BoringSSLError:
            return NATSError.tlsFailed(server: server.description, reason: "\(error)")
        default:
            return NATSError.connectionFailed(servers: [server.description], reason: Self.reason(error))
        }
    }

    private func upgradeToTLS(_ channel: any Channel, server: ServerAddress) async throws {
        let settings = options.tls ?? NATSOptions.TLS()
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let caFile = settings.caFile {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            if let certFile = settings.certFile {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
            }
            if let keyFile = settings.keyFile {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            }
        } catch {
            throw NATSError.tlsFailed(server: server.description, reason: "cannot load certificates or key: \(error)")
        }
        configuration.certificateVerification = settings.verify ? .fullVerification : .none
        let context = try NIOSSLContext(configuration: configuration)
        let hostname = server.host.first?.isNumber == true || server.host.contains(":") ? nil : server.host
        try await channel.eventLoop.submit {
            let handler = try NIOSSLClientHandler(context: context, serverHostname: hostname)
            try channel.pipeline.syncOperations.addHandler(handler, position: .first)
        }.get()
    }

    private func connectJSON(info: ServerInfo, server: ServerAddress, tls: Bool) throws -> Data {
        var fields: [String: Any] = [
            "verbose": false, "pedantic": false, "echo": true, "headers": true, "no_responders": true,
            "protocol": 1, "lang": "swift", "version": "0.1.0", "name": options.name, "tls_required": tls,
        ]
        if let user = server.user ?? options.user {
            if server.password == nil, options.password == nil, server.user != nil {
                fields["auth_token"] = user  // nats://token@host
            } else {
                fields["user"] = user
                fields["pass"] = server.password ?? options.password ?? ""
            }
        }
        if let token = options.token { fields["auth_token"] = token }
        if let credentials {
            fields["jwt"] = credentials.jwt
            fields["sig"] = try credentials.keyPair.sign(info.nonce ?? "")
        } else if let nkey {
            fields["nkey"] = nkey.publicKey
            fields["sig"] = try nkey.sign(info.nonce ?? "")
        }
        return try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
    }

    /// Makes `channel` the connection's channel: re-subscribes and sends
    /// what was published while disconnected.
    private func activate(_ channel: any Channel, info: ServerInfo, server: ServerAddress, generation: Int) throws {
        let activation = try state.withLock { state throws(NATSError) in
            try state.machine.handshakeSucceeded(channel: channel, info: info, server: server, generation: generation)
        }
        if activation.replay.readableBytes > 0 { channel.writeAndFlush(activation.replay, promise: nil) }
        for waiter in activation.connectedWaiters { waiter.succeed(()) }
        logger.debug("connected to \(server)")
        eventContinuation.yield(.connected(server: server.description))
    }

    // MARK: - Events from the channel

    private func handle(_ event: ChannelEvent, generation: Int) {
        switch event {
        case .message(let message):
            let delivery = state.withLock {
                $0.machine.messageReceived(sid: message.sid, subject: message.subject, generation: generation)
            }
            switch delivery {
            case .reply(let request):
                request.succeed(message)
            case .subscription(let subscription):
                if !subscription.deliver(message) {
                    let dropped = subscription.droppedCount
                    if dropped == 1 || dropped % 10_000 == 0 {
                        eventContinuation.yield(.slowConsumer(subject: subscription.subject, dropped: dropped))
                    }
                }
            case .drop:
                break
            }
        case .pong:
            state.withLock { $0.machine.pongReceived(generation: generation) }?.succeed(())
        case .writable:
            for waiter in state.withLock({ $0.machine.becameWritable() }) { waiter.succeed(()) }
        case .error(let message):
            logger.warning("server error: \(message)")
            eventContinuation.yield(.serverError(message))
        case .info(let bytes):
            guard let info = try? JSONDecoder().decode(ServerInfo.self, from: Data(bytes.readableBytesView)) else {
                return
            }
            if case .leave(let channel, let server) = state.withLock({
                $0.machine.infoReceived(info, generation: generation)
            }) {
                // Lame duck: the server is going away; move before it closes.
                logger.notice("\(server) entered lame-duck mode; moving to another server")
                eventContinuation.yield(.lameDuck(server: server.description))
                channel.close(promise: nil)
            }
        case .closed(let reason):
            connectionLost(generation: generation, reason: reason)
        }
    }

    private func connectionLost(generation: Int, reason: String) {
        guard case .reconnect(let failing) = state.withLock({ $0.machine.channelClosed(generation: generation) })
        else { return }
        for waiter in failing { waiter.fail(NATSError.disconnected) }
        logger.warning("disconnected: \(reason); reconnecting")
        eventContinuation.yield(.disconnected(reason: reason))
        let task = Task { [weak self] in
            guard let self else { return }
            await self.reconnectLoop()
        }
        state.withLock { $0.reconnecting = task }
    }

    private func reconnectLoop() async {
        var attempt = 0
        // Twice reconnectWait after the first round, doubling up to
        // maxReconnectWait, each wait spread by ±50 %.
        var backoff = Backoff(
            initial: min(options.reconnectWait, .seconds(3600)) * 2, maximum: options.maxReconnectWait,
            jitter: 0.5...1.5)
        while true {
            let (servers, reconnecting) = state.withLock { ($0.machine.reconnectOrder, $0.machine.isReconnecting) }
            guard reconnecting else { return }
            for server in servers {
                do {
                    try await establish(server)
                    logger.notice("reconnected to \(server) after \(attempt + 1) attempt(s)")
                    return
                } catch NATSError.closed {
                    return
                } catch {
                    if attempt == 0 || attempt % 20 == 0 {
                        logger.warning("reconnect to \(server) failed: \(error)")
                    }
                }
            }
            attempt += 1
            do {
                try await backoff.sleep()
            } catch {
                return
            }
        }
    }

    private func startKeepalive() {
        let interval = options.pingInterval
        let maxOut = options.maxPingsOut
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: interval) } catch { return }
                guard let self else { return }
                switch self.state.withLock({ $0.machine.keepaliveTick(maxPingsOut: maxOut) }) {
                case .none:
                    continue
                case .closeStale(let channel):
                    self.logger.warning("no PONG for \(maxOut) PINGs; the connection is stale, reconnecting")
                    channel.close(promise: nil)
                case .ping(let channel, let pong):
                    let sent = ContinuousClock.now
                    channel.writeAndFlush(ByteBuffer(staticString: "PING\r\n"), promise: nil)
                    Task { [weak self] in
                        guard (try? await pong.value()) != nil else { return }
                        self?.noteRoundTrip(ContinuousClock.now - sent)
                    }
                }
            }
        }
        state.withLock { $0.keepalive = task }
    }

    // MARK: - Publishing

    /// A message to publish.
    public struct OutgoingMessage: Sendable {
        /// The subject.
        public var subject: String
        /// The payload.
        public var payload: ByteBuffer
        /// Optional headers.
        public var headers: NATSHeaders?
        /// Optional reply subject.
        public var replyTo: String?

        /// A message.
        public init(subject: String, payload: ByteBuffer, headers: NATSHeaders? = nil, replyTo: String? = nil) {
            self.subject = subject
            self.payload = payload
            self.headers = headers
            self.replyTo = replyTo
        }
    }

    /// Publishes one message (written at once, not confirmed; see ``flush(timeout:)``).
    public func publish(_ subject: String, payload: ByteBuffer, headers: NATSHeaders? = nil, replyTo: String? = nil)
        async throws
    {
        try await publish([OutgoingMessage(subject: subject, payload: payload, headers: headers, replyTo: replyTo)])
    }

    /// Publishes messages with one write and one flush of the socket,
    /// waiting while the socket is not writable.
    ///
    /// - Throws: ``NATSError/maxPayloadExceeded(subject:size:maxPayload:)`` or
    ///   ``NATSError/invalidSubject(_:)`` before anything is written.
    public func publish(_ messages: [OutgoingMessage]) async throws {
        let maxPayload = self.maxPayload
        var buffer = ByteBuffer()
        buffer.reserveCapacity(messages.reduce(0) { $0 + $1.payload.readableBytes + $1.subject.utf8.count + 24 })
        for message in messages {
            try Self.check(subject: message.subject)
            let size = NATSEncoder.payloadSize(headers: message.headers, payload: message.payload)
            guard size <= maxPayload else {
                throw NATSError.maxPayloadExceeded(subject: message.subject, size: size, maxPayload: maxPayload)
            }
            NATSEncoder.publish(
                into: &buffer, subject: message.subject, replyTo: message.replyTo, headers: message.headers,
                payload: message.payload)
        }
        try await write(buffer)
    }

    @inline(__always)
    static func check(subject: String) throws {
        // One pass over the bytes: no whitespace, no empty token.
        var previousDot = true
        var empty = true
        for byte in subject.utf8 {
            empty = false
            if byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A { throw NATSError.invalidSubject(subject) }
            let isDot = byte == UInt8(ascii: ".")
            if isDot && previousDot { throw NATSError.invalidSubject(subject) }
            previousDot = isDot
        }
        if empty || previousDot { throw NATSError.invalidSubject(subject) }
    }

    /// Messages encoded for one write, checked against the server's
    /// `max_payload` as they are added; send with ``publish(_:)-(NATSConnection.PublishBuffer)``.
    public struct PublishBuffer: Sendable {
        var buffer: ByteBuffer
        /// The server's `max_payload` when the buffer was made.
        public let maxPayload: Int
        /// Messages in the buffer.
        public private(set) var count = 0

        init(maxPayload: Int, capacity: Int) {
            self.maxPayload = maxPayload
            buffer = ByteBuffer()
            buffer.reserveCapacity(capacity)
        }

        /// Encodes a message.
        /// - Throws: ``NATSError/maxPayloadExceeded(subject:size:maxPayload:)``
        ///   or ``NATSError/invalidSubject(_:)``; nothing is added then.
        ///   Pass `subjectIsValid: true` only for subjects the caller already
        ///   made safe (it skips the check).
        public mutating func append(
            subject: String, payload: ByteBuffer, headers: NATSHeaders? = nil, replyTo: String? = nil,
            subjectIsValid: Bool = false
        ) throws {
            if !subjectIsValid { try NATSConnection.check(subject: subject) }
            let size = NATSEncoder.payloadSize(headers: headers, payload: payload)
            guard size <= maxPayload else {
                throw NATSError.maxPayloadExceeded(subject: subject, size: size, maxPayload: maxPayload)
            }
            NATSEncoder.publish(into: &buffer, subject: subject, replyTo: replyTo, headers: headers, payload: payload)
            count += 1
        }

        /// Appends many messages written straight into one reserved region
        /// of at least `capacity` bytes: one capacity check and no copy of a
        /// `String` or `ByteBuffer` per message. Size `capacity` with
        /// ``FrameWriter/frameSize(subject:payload:)`` per message. If `body`
        /// throws, nothing it wrote is kept.
        public mutating func appendFrames<Result>(
            capacity: Int, _ body: (inout FrameWriter) throws -> Result
        ) rethrows -> Result {
            var result: Result?
            var written = 0
            let maxPayload = self.maxPayload
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { out in
                var writer = FrameWriter(out, maxPayload: maxPayload)
                result = try body(&writer)
                written = writer.count
                return writer.at
            }
            count += written
            return result!
        }

        /// A JetStream publish (see ``NATSEncoder``): reply subject
        /// `replyPrefix` + `replyIndex`, optional `Nats-Msg-Id`.
        mutating func appendJetStream(
            subject: String, payload: ByteBuffer, messageID: String?, replyPrefix: String, replyIndex: Int
        ) throws {
            try NATSConnection.check(subject: subject)
            let size = (messageID.map { NATSEncoder.jetStreamHeaderSize(messageID: $0) } ?? 0) + payload.readableBytes
            guard size <= maxPayload else {
                throw NATSError.maxPayloadExceeded(subject: subject, size: size, maxPayload: maxPayload)
            }
            NATSEncoder.publish(
                into: &buffer, subject: subject, replyPrefix: replyPrefix, replyIndex: replyIndex,
                messageID: messageID, payload: payload)
            count += 1
        }
    }

    /// An empty ``PublishBuffer`` for this connection's server.
    public func makePublishBuffer(capacity: Int = 64 * 1024) -> PublishBuffer {
        PublishBuffer(maxPayload: maxPayload, capacity: capacity)
    }

    /// Publishes every message of `messages` with one write and one flush
    /// of the socket.
    public func publish(_ messages: PublishBuffer) async throws {
        guard messages.count > 0 else { return }
        try await write(messages.buffer)
    }

    /// Writes raw protocol bytes: to the socket when connected, to the
    /// reconnect buffer while reconnecting (waiting when it is full).
    func write(_ buffer: ByteBuffer) async throws {
        let limit = options.reconnectBufferBytes
        while true {
            let action = try state.withLock { state throws(NATSError) in
                try state.machine.writeRequested(buffer, bufferLimit: limit)
            }
            switch action {
            case .buffered:
                return
            case .wait(let waiter):
                try await waiter.value()
                continue
            case .write(let channel, let generation):
                do {
                    try await channel.writeAndFlush(buffer).get()
                } catch {
                    // The channel died under the write; what reached the
                    // server is unknown. Core NATS promises no more: retry in
                    // the reconnect buffer (a message may arrive twice).
                    if state.withLock({ $0.machine.phase == .closed }) { throw NATSError.closed }
                    continue
                }
                if !channel.isWritable {
                    let waiter = state.withLock {
                        $0.machine.writeBlocked(generation: generation, stillBlocked: !channel.isWritable)
                    }
                    if let waiter { try? await waiter.value() }
                }
                return
            }
        }
    }

    /// Waits until the server processed everything written before (a
    /// PING/PONG round trip).
    ///
    /// - Throws: ``NATSError/disconnected`` if the connection broke (what was
    ///   published may be lost: publish again after ``waitUntilConnected()``),
    ///   ``NATSError/timeout(_:)``.
    public func flush(timeout: Duration = .seconds(10)) async throws {
        let (channel, waiter) = try state.withLock { state throws(NATSError) in try state.machine.flushRequested() }
        let sent = ContinuousClock.now
        channel.writeAndFlush(ByteBuffer(staticString: "PING\r\n"), promise: nil)
        try await waiter.value(timeout: timeout, onTimeout: NATSError.timeout("no PONG within \(timeout)"))
        noteRoundTrip(ContinuousClock.now - sent)
    }

    /// Returns once connected (at once when connected now).
    public func waitUntilConnected() async throws {
        let waiter = try state.withLock { state throws(NATSError) in try state.machine.connectionAwaited() }
        try await waiter?.value()
    }

    // MARK: - Subscribing

    /// Subscribes to `subject` (wildcards allowed), optionally in a queue
    /// group; up to `capacity` messages wait for the consumer.
    public func subscribe(_ subject: String, queueGroup: String? = nil, capacity: Int = 65536) async throws
        -> NATSSubscription
    {
        try await subscribe(subject, queueGroup: queueGroup, capacity: capacity, handler: nil)
    }

    /// Subscribes to `subject` and calls `handler` with each message, on
    /// the connection's event-loop thread, in arrival order, without a task
    /// switch per message. The handler must return quickly and never block
    /// (hand work elsewhere); nothing is buffered and nothing is dropped. The
    /// returned subscription's sequence yields no messages; use it to
    /// unsubscribe.
    public func subscribe(
        _ subject: String, queueGroup: String? = nil, handler: @escaping @Sendable (NATSMessage) -> Void
    ) async throws -> NATSSubscription {
        try await subscribe(subject, queueGroup: queueGroup, capacity: 1, handler: handler)
    }

    private func subscribe(
        _ subject: String, queueGroup: String?, capacity: Int, handler: (@Sendable (NATSMessage) -> Void)?
    ) async throws -> NATSSubscription {
        guard !subject.isEmpty, !subject.contains(" ") else { throw NATSError.invalidSubject(subject) }
        let sid = state.withLock { $0.machine.makeSID() }
        let subscription = NATSSubscription(
            subject: subject, queueGroup: queueGroup, sid: sid, capacity: capacity, handler: handler
        ) { [weak self] sid in
            self?.unsubscribe(sid)
        }
        // While not connected, the activation subscribes.
        if state.withLock({ $0.machine.subscribed(subscription) }) {
            var buffer = ByteBuffer()
            NATSEncoder.subscribe(into: &buffer, subject: subject, queueGroup: queueGroup, sid: sid)
            try await write(buffer)
        }
        return subscription
    }

    private func unsubscribe(_ sid: UInt64) {
        let channel = state.withLock { $0.machine.unsubscribed(sid: sid) }
        var buffer = ByteBuffer()
        NATSEncoder.unsubscribe(into: &buffer, sid: sid)
        channel?.writeAndFlush(buffer, promise: nil)
    }

    // MARK: - Request/reply

    /// Publishes a request and waits for the first reply.
    ///
    /// - Throws: ``NATSError/noResponders(subject:)`` when nothing listens,
    ///   ``NATSError/timeout(_:)`` when no reply came in time.
    public func request(
        _ subject: String, payload: ByteBuffer, headers: NATSHeaders? = nil, timeout: Duration = .seconds(5)
    ) async throws -> NATSMessage {
        let inboxPrefix = options.inboxPrefix
        let (inbox, newInbox, token, promise) = state.withLock { state in
            state.machine.requestStarted {
                let random = (0..<22).map { _ in
                    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".randomElement()!
                }
                return inboxPrefix + "." + String(random)
            }
        }
        if newInbox {
            var buffer = ByteBuffer()
            NATSEncoder.subscribe(into: &buffer, subject: inbox.prefix + ".*", queueGroup: nil, sid: inbox.sid)
            if state.withLock({ $0.machine.phase == .ready }) { try await write(buffer) }
        }
        do {
            try await publish([
                OutgoingMessage(
                    subject: subject, payload: payload, headers: headers, replyTo: inbox.prefix + "." + token)
            ])
            let reply = try await promise.value(
                timeout: timeout,
                onTimeout: NATSError.timeout("no reply to a request on '\(subject)' within \(timeout)"))
            if reply.status == 503 { throw NATSError.noResponders(subject: subject) }
            return reply
        } catch {
            state.withLock { $0.machine.requestAbandoned(token: token) }
            throw error
        }
    }

    // MARK: - Closing

    /// Flushes (briefly) and closes the connection; subscriptions end.
    public func close() async {
        if state.withLock({ $0.machine.closeRequested() }) {
            try? await flush(timeout: .seconds(2))
        }
        let (closing, tasks) = state.withLock { state in
            (state.machine.closeFinished(), [state.reconnecting, state.keepalive])
        }
        for task in tasks { task?.cancel() }
        for waiter in closing.waiters { waiter.fail(NATSError.closed) }
        for request in closing.requests { request.fail(NATSError.closed) }
        for subscription in closing.subscriptions { subscription.finish() }
        try? await closing.channel?.close()
        eventContinuation.yield(.closed)
        eventContinuation.finish()
    }
}
