import NIOCore

/// The life of a ``NATSConnection`` as a value: its phase, and what to do
/// on each event.
///
/// No I/O, no locks, no clocks: ``NATSConnection`` keeps one in a `Mutex`,
/// feeds it what happens (a socket connected, a PONG arrived, the channel
/// closed, a caller wants to write) and performs the action it returns
/// (write to this channel, buffer, wait, reconnect, fail these waiters).
/// Every transition can therefore be driven by a unit test, without a server;
/// `Channel` is the socket type (a NIO channel in production, anything in a
/// test).
///
/// The phases:
///
/// ```
///            attemptStarted            channelConnected        handshakeSucceeded
/// connecting ─────────────▶ connecting ───────────────▶ handshaking ───────────▶ ready
///     ▲   (a new generation)      ▲          attemptFailed      │                  │ channelClosed
///     │                           └─────────────────────────────┘                  ▼
///     │                                                                      reconnecting ─▶ (attemptStarted…)
/// closeRequested: ready ─▶ draining (flush) ─▶ closeFinished ─▶ closed; any other phase ─▶ closed
/// ```
///
/// Every connection attempt gets a new *generation*; events carry the
/// generation of the channel they came from, so a late event of a channel
/// already replaced is ignored.
struct ConnectionStateMachine<Channel> {
    /// Where the connection is in its life.
    enum State {
        /// Opening a socket to a server (`afterLoss`: a reconnect; false for
        /// the first connect). `generation` is nil between attempts.
        case connecting(generation: Int?, afterLoss: Bool)
        /// The socket is open; INFO, CONNECT and the first PING/PONG are under way.
        case handshaking(generation: Int, afterLoss: Bool)
        /// Connected: publishes go straight to `channel`.
        case ready(Ready)
        /// ``NATSConnection/close()`` was called while connected: the last
        /// flush is under way; nothing reconnects any more.
        case draining(channel: Channel?, generation: Int)
        /// Closed for good.
        case closed
    }

    struct Ready {
        var channel: Channel
        var generation: Int
        var server: ServerAddress
        /// PINGs of the keepalive not answered yet.
        var pingsOut = 0
    }

    /// A coarse view of ``State`` for callers and tests.
    enum Phase: Equatable {
        case connecting, handshaking, ready, reconnecting, draining, closed
    }

    private(set) var state: State = .connecting(generation: nil, afterLoss: false)
    private var lastGeneration = 0

    /// Servers to try: the configured ones, then those the cluster announced.
    private(set) var pool: [ServerAddress]
    /// The server last connected (kept while reconnecting, so the next
    /// round starts after it).
    private(set) var server: ServerAddress?
    /// The INFO of the server last connected.
    private(set) var info: ServerInfo?
    private(set) var subscriptions: [UInt64: NATSSubscription] = [:]
    private var nextSID: UInt64 = 1
    /// The request/reply inbox (`prefix.*`), made on the first request.
    private(set) var inbox: (prefix: String, sid: UInt64)?
    private var requests: [String: AsyncPromise<NATSMessage>] = [:]
    private var nextRequest: UInt64 = 0
    /// Bytes published while not connected, sent on (re)connect.
    private(set) var pending = ByteBuffer()
    private var pongWaiters = CircularBuffer<AsyncPromise<Void>>()
    private var connectedWaiters: [AsyncPromise<Void>] = []
    private var writableWaiters: [AsyncPromise<Void>] = []

    init(pool: [ServerAddress]) {
        self.pool = pool
    }

    var phase: Phase {
        switch state {
        case .connecting(_, let afterLoss): afterLoss ? .reconnecting : .connecting
        case .handshaking(_, let afterLoss): afterLoss ? .reconnecting : .handshaking
        case .ready: .ready
        case .draining: .draining
        case .closed: .closed
        }
    }

    /// The server connected now, if any.
    var connectedServer: ServerAddress? {
        if case .ready(let ready) = state { return ready.server }
        return nil
    }

    private func isCurrent(_ generation: Int) -> Bool {
        switch state {
        case .ready(let ready): ready.generation == generation
        case .draining(_, let current): current == generation
        case .connecting(let current, _): current == generation
        case .handshaking(let current, _): current == generation
        case .closed: false
        }
    }

    // MARK: - Connecting

    /// A connection attempt starts: returns its generation.
    /// - Throws: ``NATSError/closed`` once closing or closed.
    mutating func attemptStarted() throws(NATSError) -> Int {
        switch state {
        case .connecting(_, let afterLoss), .handshaking(_, let afterLoss):
            lastGeneration += 1
            state = .connecting(generation: lastGeneration, afterLoss: afterLoss)
            return lastGeneration
        case .ready:
            // Connected meanwhile (by another attempt): nothing to do.
            throw .disconnected
        case .draining, .closed:
            throw .closed
        }
    }

    /// The socket of attempt `generation` is open; the handshake starts.
    mutating func channelConnected(generation: Int) throws(NATSError) {
        switch state {
        case .connecting(let current, let afterLoss) where current == generation:
            state = .handshaking(generation: generation, afterLoss: afterLoss)
        case .draining, .closed:
            throw .closed
        default:
            throw .disconnected
        }
    }

    /// Attempt `generation` failed (socket, TLS, handshake); the caller tries
    /// the next server or waits.
    mutating func attemptFailed(generation: Int) {
        switch state {
        case .connecting(let current, let afterLoss) where current == generation:
            state = .connecting(generation: nil, afterLoss: afterLoss)
        case .handshaking(let current, let afterLoss) where current == generation:
            state = .connecting(generation: nil, afterLoss: afterLoss)
        default:
            break
        }
    }

    /// What to do once the handshake of a channel succeeded.
    struct Activation {
        /// Subscriptions again, then what was published meanwhile: write it first.
        var replay: ByteBuffer
        /// Waiting for a connection (``NATSConnection/waitUntilConnected()``,
        /// publishers held by a full reconnect buffer): succeed them.
        var connectedWaiters: [AsyncPromise<Void>]
    }

    /// The handshake of attempt `generation` on `channel` succeeded: the
    /// connection is ready.
    /// - Throws: ``NATSError/closed`` when closed meanwhile (close the
    ///   channel), ``NATSError/disconnected`` when the attempt is stale.
    mutating func handshakeSucceeded(channel: Channel, info: ServerInfo, server: ServerAddress, generation: Int)
        throws(NATSError) -> Activation
    {
        switch state {
        case .handshaking(let current, _) where current == generation:
            break
        case .draining, .closed:
            throw .closed
        default:
            throw .disconnected
        }
        state = .ready(Ready(channel: channel, generation: generation, server: server))
        self.info = info
        self.server = server
        learn(info.connect_urls ?? [], tls: server.tls)
        var replay = ByteBuffer()
        for subscription in subscriptions.values.sorted(by: { $0.sid < $1.sid }) {
            NATSEncoder.subscribe(
                into: &replay, subject: subscription.subject, queueGroup: subscription.queueGroup,
                sid: subscription.sid)
        }
        if let inbox {
            NATSEncoder.subscribe(into: &replay, subject: inbox.prefix + ".*", queueGroup: nil, sid: inbox.sid)
        }
        replay.writeImmutableBuffer(pending)
        pending.clear()
        defer { connectedWaiters.removeAll() }
        return Activation(replay: replay, connectedWaiters: connectedWaiters)
    }

    /// Adds servers a cluster announced (`connect_urls`) to the pool.
    private mutating func learn(_ urls: [String], tls: Bool) {
        for url in urls {
            guard var address = try? ServerAddress(parsing: url),
                !pool.contains(where: { $0.host == address.host && $0.port == address.port })
            else { continue }
            address.tls = tls
            pool.append(address)
        }
    }

    /// The servers to try in one reconnect round: the pool, starting after
    /// the server last connected (so a lame-duck or failed one comes last).
    var reconnectOrder: [ServerAddress] {
        let start =
            server.flatMap { server in pool.firstIndex { $0.host == server.host && $0.port == server.port } }.map {
                $0 + 1
            } ?? 0
        return (0..<pool.count).map { pool[(start + $0) % pool.count] }
    }

    /// Whether a reconnect loop should go on trying.
    var isReconnecting: Bool { phase == .reconnecting }

    // MARK: - Events from the channel

    /// What to do when a channel closed.
    enum ClosedAction {
        /// Stale or expected: nothing.
        case none
        /// The connection was lost: fail these waiters (PONGs and writability
        /// can no longer come) and start reconnecting.
        case reconnect(failing: [AsyncPromise<Void>])
    }

    /// The channel of `generation` closed.
    mutating func channelClosed(generation: Int) -> ClosedAction {
        switch state {
        case .ready(let ready) where ready.generation == generation:
            state = .connecting(generation: nil, afterLoss: true)
            var failing = Array(pongWaiters)
            pongWaiters.removeAll()
            failing += writableWaiters
            writableWaiters.removeAll()
            return .reconnect(failing: failing)
        case .draining(_, let current) where current == generation:
            state = .draining(channel: nil, generation: generation)
            return .none
        default:
            return .none
        }
    }

    /// Where a message goes.
    enum Delivery {
        case subscription(NATSSubscription)
        case reply(AsyncPromise<NATSMessage>)
        case drop
    }

    /// A message arrived on the channel of `generation`.
    mutating func messageReceived(sid: UInt64, subject: String, generation: Int) -> Delivery {
        guard isCurrent(generation) else { return .drop }
        if let inbox, sid == inbox.sid {
            let token = subject.split(separator: ".").last.map(String.init) ?? ""
            return requests.removeValue(forKey: token).map(Delivery.reply) ?? .drop
        }
        return subscriptions[sid].map(Delivery.subscription) ?? .drop
    }

    /// A PONG arrived: returns the oldest waiter for one.
    mutating func pongReceived(generation: Int) -> AsyncPromise<Void>? {
        switch state {
        case .ready(var ready) where ready.generation == generation:
            ready.pingsOut = 0
            state = .ready(ready)
        case .draining(_, let current) where current == generation:
            break
        default:
            return nil
        }
        return pongWaiters.popFirst()
    }

    /// The channel became writable: returns the publishers that waited.
    mutating func becameWritable() -> [AsyncPromise<Void>] {
        defer { writableWaiters.removeAll() }
        return writableWaiters
    }

    /// What to do about an INFO sent after the handshake.
    enum InfoAction {
        case none
        /// The server entered lame-duck mode: close this channel, so the
        /// connection moves to another server before it goes away.
        case leave(Channel, server: ServerAddress)
    }

    /// The server sent INFO (cluster changes, lame-duck mode).
    mutating func infoReceived(_ info: ServerInfo, generation: Int) -> InfoAction {
        guard case .ready(let ready) = state, ready.generation == generation else { return .none }
        learn(info.connect_urls ?? [], tls: ready.server.tls)
        return info.ldm == true ? .leave(ready.channel, server: ready.server) : .none
    }

    /// What the keepalive does on one tick.
    enum KeepaliveAction {
        case none
        /// Write a PING; the waiter is completed by its PONG.
        case ping(Channel, pong: AsyncPromise<Void>)
        /// `maxPingsOut` PINGs went unanswered: the connection is stale;
        /// close the channel (that starts a reconnect).
        case closeStale(Channel)
    }

    /// One keepalive interval passed.
    mutating func keepaliveTick(maxPingsOut: Int) -> KeepaliveAction {
        guard case .ready(var ready) = state else { return .none }
        if ready.pingsOut >= maxPingsOut { return .closeStale(ready.channel) }
        ready.pingsOut += 1
        state = .ready(ready)
        let pong = AsyncPromise<Void>()
        pongWaiters.append(pong)
        return .ping(ready.channel, pong: pong)
    }

    // MARK: - Requests from callers

    /// What to do with bytes to write.
    enum WriteAction {
        /// Write them to this channel (of this generation).
        case write(Channel, generation: Int)
        /// Kept in the reconnect buffer; sent on reconnect.
        case buffered
        /// The reconnect buffer is full: wait until connected, then ask again.
        case wait(AsyncPromise<Void>)
    }

    /// A caller wants to write `bytes`; `bufferLimit` bounds what is kept
    /// while disconnected (one write is always taken into an empty buffer).
    mutating func writeRequested(_ bytes: ByteBuffer, bufferLimit: Int) throws(NATSError) -> WriteAction {
        switch state {
        case .ready(let ready):
            return .write(ready.channel, generation: ready.generation)
        case .draining(let channel?, let generation):
            return .write(channel, generation: generation)
        case .draining(nil, _), .closed:
            throw .closed
        case .connecting, .handshaking:
            if pending.readableBytes + bytes.readableBytes <= bufferLimit || pending.readableBytes == 0 {
                pending.writeImmutableBuffer(bytes)
                return .buffered
            }
            let waiter = AsyncPromise<Void>()
            connectedWaiters.append(waiter)
            return .wait(waiter)
        }
    }

    /// A write on the channel of `generation` left it not writable: returns a
    /// waiter for writability, or nil when there is nothing to wait for (the
    /// channel was replaced, or became writable again: `stillBlocked` is read
    /// under the caller's lock).
    mutating func writeBlocked(generation: Int, stillBlocked: Bool) -> AsyncPromise<Void>? {
        guard stillBlocked, case .ready(let ready) = state, ready.generation == generation else { return nil }
        let waiter = AsyncPromise<Void>()
        writableWaiters.append(waiter)
        return waiter
    }

    /// A caller wants a PING/PONG round trip: write a PING to the returned
    /// channel, then await the waiter.
    /// - Throws: ``NATSError/disconnected`` when not connected.
    mutating func flushRequested() throws(NATSError) -> (Channel, AsyncPromise<Void>) {
        switch state {
        case .ready(let ready):
            let waiter = AsyncPromise<Void>()
            pongWaiters.append(waiter)
            return (ready.channel, waiter)
        case .draining(let channel?, _):
            let waiter = AsyncPromise<Void>()
            pongWaiters.append(waiter)
            return (channel, waiter)
        case .connecting, .handshaking:
            throw .disconnected
        case .draining(nil, _), .closed:
            throw .closed
        }
    }

    /// A caller waits until connected: nil when connected now.
    mutating func connectionAwaited() throws(NATSError) -> AsyncPromise<Void>? {
        switch state {
        case .ready, .draining(.some, _): return nil
        case .draining(nil, _), .closed: throw .closed
        case .connecting, .handshaking:
            let waiter = AsyncPromise<Void>()
            connectedWaiters.append(waiter)
            return waiter
        }
    }

    /// A new subscription id.
    mutating func makeSID() -> UInt64 {
        defer { nextSID += 1 }
        return nextSID
    }

    /// Registers a subscription; returns whether to send its SUB now (when
    /// not connected, the activation subscribes).
    mutating func subscribed(_ subscription: NATSSubscription) -> Bool {
        subscriptions[subscription.sid] = subscription
        return phase == .ready
    }

    /// Forgets a subscription; returns the channel to send its UNSUB to.
    mutating func unsubscribed(sid: UInt64) -> Channel? {
        subscriptions.removeValue(forKey: sid)
        if case .ready(let ready) = state { return ready.channel }
        return nil
    }

    /// A request starts: its reply subject's token and promise; `newInbox`
    /// when the inbox was made now (subscribe it when connected).
    mutating func requestStarted(makeInboxPrefix: () -> String) -> (
        inbox: (prefix: String, sid: UInt64), newInbox: Bool, token: String, reply: AsyncPromise<NATSMessage>
    ) {
        var created = false
        if inbox == nil {
            inbox = (makeInboxPrefix(), makeSID())
            created = true
        }
        nextRequest += 1
        let token = String(nextRequest)
        let promise = AsyncPromise<NATSMessage>()
        requests[token] = promise
        return (inbox!, created, token, promise)
    }

    /// A request ended without its reply (time-out, error).
    mutating func requestAbandoned(token: String) {
        requests.removeValue(forKey: token)
    }

    // MARK: - Closing

    /// ``NATSConnection/close()`` was called: returns whether to flush first
    /// (connected: the connection drains).
    mutating func closeRequested() -> Bool {
        switch state {
        case .ready(let ready):
            state = .draining(channel: ready.channel, generation: ready.generation)
            return true
        case .connecting, .handshaking:
            state = .draining(channel: nil, generation: lastGeneration)
            return false
        case .draining, .closed:
            return false
        }
    }

    /// What closing leaves to do.
    struct Closing {
        /// Close it.
        var channel: Channel?
        /// End them.
        var subscriptions: [NATSSubscription]
        /// Fail them with ``NATSError/closed``.
        var waiters: [AsyncPromise<Void>]
        /// Fail them with ``NATSError/closed``.
        var requests: [AsyncPromise<NATSMessage>]
    }

    /// The connection closes for good.
    mutating func closeFinished() -> Closing {
        var channel: Channel?
        switch state {
        case .ready(let ready): channel = ready.channel
        case .draining(let draining, _): channel = draining
        default: channel = nil
        }
        state = .closed
        let closing = Closing(
            channel: channel, subscriptions: Array(subscriptions.values),
            waiters: Array(pongWaiters) + connectedWaiters + writableWaiters, requests: Array(requests.values))
        pongWaiters.removeAll()
        connectedWaiters.removeAll()
        writableWaiters.removeAll()
        subscriptions.removeAll()
        requests.removeAll()
        pending.clear()
        return closing
    }
}
