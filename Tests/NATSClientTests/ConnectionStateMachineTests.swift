import NIOCore
import Testing

@testable import NATSClient

/// Drives ``ConnectionStateMachine`` through every transition: no server,
/// no socket, no clock.
@Suite struct ConnectionStateMachineTests {
    final class FakeChannel: Sendable {
        let name: String
        init(_ name: String) { self.name = name }
    }

    typealias Machine = ConnectionStateMachine<FakeChannel>

    static let first = ServerAddress(host: "a", port: 4222, tls: false)
    static let second = ServerAddress(host: "b", port: 4222, tls: false)

    func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

    /// A machine connected to `server` on `channel`; returns the generation.
    func connected(
        _ machine: inout Machine, channel: FakeChannel, server: ServerAddress = first, info: ServerInfo = ServerInfo()
    ) throws -> Int {
        let generation = try machine.attemptStarted()
        try machine.channelConnected(generation: generation)
        _ = try machine.handshakeSucceeded(channel: channel, info: info, server: server, generation: generation)
        return generation
    }

    func subscription(_ machine: inout Machine, _ subject: String) -> NATSSubscription {
        NATSSubscription(subject: subject, queueGroup: nil, sid: machine.makeSID(), capacity: 8) { _ in }
    }

    @Test func firstConnectGoesThroughTheHandshake() throws {
        var machine = Machine(pool: [Self.first])
        #expect(machine.phase == .connecting)
        let generation = try machine.attemptStarted()
        #expect(machine.phase == .connecting)
        try machine.channelConnected(generation: generation)
        #expect(machine.phase == .handshaking)
        let channel = FakeChannel("one")
        var info = ServerInfo()
        info.max_payload = 512
        let activation = try machine.handshakeSucceeded(
            channel: channel, info: info, server: Self.first, generation: generation)
        #expect(machine.phase == .ready)
        #expect(machine.connectedServer == Self.first)
        #expect(machine.info?.max_payload == 512)
        #expect(activation.replay.readableBytes == 0)
        #expect(activation.connectedWaiters.isEmpty)
        guard case .write(let target, let writeGeneration) = try machine.writeRequested(bytes("x"), bufferLimit: 10)
        else {
            Issue.record("a ready connection writes to its channel")
            return
        }
        #expect(target === channel)
        #expect(writeGeneration == generation)
    }

    @Test func aFailedAttemptLeavesTheNextOneToTry() throws {
        var machine = Machine(pool: [Self.first, Self.second])
        let failed = try machine.attemptStarted()
        try machine.channelConnected(generation: failed)
        machine.attemptFailed(generation: failed)
        #expect(machine.phase == .connecting)
        let next = try machine.attemptStarted()
        #expect(next != failed)
        // The failed attempt's late events change nothing.
        #expect(throws: NATSError.disconnected) { try machine.channelConnected(generation: failed) }
        machine.attemptFailed(generation: failed)
        try machine.channelConnected(generation: next)
        #expect(throws: NATSError.disconnected) {
            _ = try machine.handshakeSucceeded(
                channel: FakeChannel("late"), info: ServerInfo(), server: Self.first, generation: failed)
        }
        _ = try machine.handshakeSucceeded(
            channel: FakeChannel("two"), info: ServerInfo(), server: Self.second, generation: next)
        #expect(machine.connectedServer == Self.second)
    }

    @Test func writesWhileConnectingAreBufferedThenReplayedAfterTheSubscriptions() throws {
        var machine = Machine(pool: [Self.first])
        let first = subscription(&machine, "logs.>")
        let sendNow = machine.subscribed(first)
        #expect(!sendNow)  // not connected: the activation subscribes
        guard case .buffered = try machine.writeRequested(bytes("PUB a 1\r\nx\r\n"), bufferLimit: 16) else {
            Issue.record("a write while connecting is buffered")
            return
        }
        // A full buffer makes the writer wait for the connection.
        guard case .wait(let waiter) = try machine.writeRequested(bytes("PUB b 1\r\ny\r\n"), bufferLimit: 16) else {
            Issue.record("a write past the buffer limit waits")
            return
        }
        let awaited = try machine.connectionAwaited()
        #expect(awaited != nil)
        let generation = try machine.attemptStarted()
        try machine.channelConnected(generation: generation)
        let activation = try machine.handshakeSucceeded(
            channel: FakeChannel("one"), info: ServerInfo(), server: Self.first, generation: generation)
        #expect(text(activation.replay) == "SUB logs.> \(first.sid)\r\nPUB a 1\r\nx\r\n")
        #expect(activation.connectedWaiters.count == 2)
        #expect(activation.connectedWaiters.contains { $0 === waiter })
        #expect(machine.pending.readableBytes == 0)
        let connectedNow = try machine.connectionAwaited()
        #expect(connectedNow == nil)
    }

    @Test func oneWriteIsAlwaysTakenIntoAnEmptyBuffer() throws {
        var machine = Machine(pool: [Self.first])
        guard case .buffered = try machine.writeRequested(bytes(String(repeating: "x", count: 100)), bufferLimit: 10)
        else {
            Issue.record("a write larger than the limit still fits an empty buffer")
            return
        }
        #expect(machine.pending.readableBytes == 100)
    }

    @Test func aLostChannelFailsItsWaitersAndStartsReconnecting() throws {
        var machine = Machine(pool: [Self.first, Self.second])
        let channel = FakeChannel("one")
        let generation = try connected(&machine, channel: channel)
        let (_, pong) = try machine.flushRequested()
        let blocked = machine.writeBlocked(generation: generation, stillBlocked: true)
        let writable = try #require(blocked)
        let notBlocked = machine.writeBlocked(generation: generation, stillBlocked: false)
        let otherChannel = machine.writeBlocked(generation: generation + 1, stillBlocked: true)
        #expect(notBlocked == nil && otherChannel == nil)
        // A stale channel closing changes nothing.
        guard case .none = machine.channelClosed(generation: generation - 1) else {
            Issue.record("a stale close is ignored")
            return
        }
        #expect(machine.phase == .ready)
        guard case .reconnect(let failing) = machine.channelClosed(generation: generation) else {
            Issue.record("losing the channel reconnects")
            return
        }
        #expect(failing.count == 2)
        #expect(failing.contains { $0 === pong } && failing.contains { $0 === writable })
        #expect(machine.phase == .reconnecting)
        #expect(machine.isReconnecting)
        #expect(machine.connectedServer == nil)
        #expect(throws: NATSError.disconnected) { _ = try machine.flushRequested() }
        // The next round starts after the server just lost.
        #expect(machine.reconnectOrder == [Self.second, Self.first])
        // A reconnect attempt stays "reconnecting" through its handshake.
        let next = try machine.attemptStarted()
        try machine.channelConnected(generation: next)
        #expect(machine.phase == .reconnecting)
        _ = try machine.handshakeSucceeded(
            channel: FakeChannel("two"), info: ServerInfo(), server: Self.second, generation: next)
        #expect(machine.phase == .ready)
        #expect(!machine.isReconnecting)
        // A second close of the old channel is stale now.
        guard case .none = machine.channelClosed(generation: generation) else {
            Issue.record("the old channel's close is ignored")
            return
        }
        #expect(machine.phase == .ready)
    }

    @Test func keepalivePingsThenDeclaresTheConnectionStale() throws {
        var machine = Machine(pool: [Self.first])
        guard case .none = machine.keepaliveTick(maxPingsOut: 2) else {
            Issue.record("no PING while not connected")
            return
        }
        let channel = FakeChannel("one")
        let generation = try connected(&machine, channel: channel)
        for _ in 0..<2 {
            guard case .ping(let target, _) = machine.keepaliveTick(maxPingsOut: 2) else {
                Issue.record("a connected keepalive pings")
                return
            }
            #expect(target === channel)
        }
        guard case .closeStale(let stale) = machine.keepaliveTick(maxPingsOut: 2) else {
            Issue.record("two unanswered PINGs make the connection stale")
            return
        }
        #expect(stale === channel)
        // A PONG resets the count (and answers the oldest PING).
        let answered = machine.pongReceived(generation: generation)
        #expect(answered != nil)
        guard case .ping = machine.keepaliveTick(maxPingsOut: 2) else {
            Issue.record("after a PONG the keepalive pings again")
            return
        }
        let staleAnswer = machine.pongReceived(generation: generation + 7)
        #expect(staleAnswer == nil)
    }

    @Test func messagesGoToTheirSubscriptionOrRequest() throws {
        var machine = Machine(pool: [Self.first])
        let generation = try connected(&machine, channel: FakeChannel("one"))
        let logs = subscription(&machine, "logs.>")
        let sendNow = machine.subscribed(logs)
        #expect(sendNow)
        let request = machine.requestStarted { "_INBOX.abc" }
        #expect(request.newInbox)
        #expect(request.inbox.prefix == "_INBOX.abc")
        let second = machine.requestStarted { "_INBOX.other" }
        #expect(!second.newInbox)

        guard
            case .subscription(let target) = machine.messageReceived(
                sid: logs.sid, subject: "logs.a", generation: generation)
        else {
            Issue.record("a subscription's message goes to it")
            return
        }
        #expect(target === logs)
        guard
            case .reply(let reply) = machine.messageReceived(
                sid: request.inbox.sid, subject: "_INBOX.abc.\(request.token)", generation: generation)
        else {
            Issue.record("a reply goes to its request")
            return
        }
        #expect(reply === request.reply)
        // Each reply is taken once; unknown ids and stale channels drop.
        guard
            case .drop = machine.messageReceived(
                sid: request.inbox.sid, subject: "_INBOX.abc.\(request.token)", generation: generation),
            case .drop = machine.messageReceived(sid: 999, subject: "x", generation: generation),
            case .drop = machine.messageReceived(sid: logs.sid, subject: "logs.a", generation: generation - 1)
        else {
            Issue.record("duplicate replies, unknown sids and stale channels drop")
            return
        }
        // Unsubscribing sends the UNSUB on the channel; the sid is forgotten.
        let unsubscribeChannel = machine.unsubscribed(sid: logs.sid)
        #expect(unsubscribeChannel?.name == "one")
        guard case .drop = machine.messageReceived(sid: logs.sid, subject: "logs.a", generation: generation) else {
            Issue.record("an unsubscribed sid drops")
            return
        }
    }

    @Test func anAbandonedRequestForgetsItsReply() throws {
        var machine = Machine(pool: [Self.first])
        let generation = try connected(&machine, channel: FakeChannel("one"))
        let request = machine.requestStarted { "_INBOX.abc" }
        machine.requestAbandoned(token: request.token)
        guard
            case .drop = machine.messageReceived(
                sid: request.inbox.sid, subject: "_INBOX.abc.\(request.token)", generation: generation)
        else {
            Issue.record("a late reply to an abandoned request drops")
            return
        }
    }

    @Test func infoGrowsThePoolAndLameDuckLeavesTheServer() throws {
        var machine = Machine(pool: [Self.first])
        var info = ServerInfo()
        info.connect_urls = ["c:4223", "a:4222"]
        let channel = FakeChannel("one")
        let generation = try connected(
            &machine, channel: channel, server: ServerAddress(host: "a", port: 4222, tls: true), info: info)
        #expect(machine.pool.map(\.description) == ["nats://a:4222", "tls://c:4223"])
        #expect(machine.pool.last?.tls == true)  // learnt servers are reached like the current one

        info.connect_urls = ["d:4224"]
        guard case .none = machine.infoReceived(info, generation: generation) else {
            Issue.record("an INFO without ldm keeps the connection")
            return
        }
        #expect(machine.pool.count == 3)
        info.ldm = true
        guard case .none = machine.infoReceived(info, generation: generation - 1) else {
            Issue.record("a stale channel's INFO is ignored")
            return
        }
        guard case .leave(let leaving, let server) = machine.infoReceived(info, generation: generation) else {
            Issue.record("lame-duck mode leaves the server")
            return
        }
        #expect(leaving === channel)
        #expect(server.host == "a")
    }

    @Test func closingAConnectedConnectionDrainsThenCloses() throws {
        var machine = Machine(pool: [Self.first])
        let channel = FakeChannel("one")
        let generation = try connected(&machine, channel: channel)
        let logs = subscription(&machine, "logs.>")
        _ = machine.subscribed(logs)
        let request = machine.requestStarted { "_INBOX.abc" }
        let drains = machine.closeRequested()
        #expect(drains)
        #expect(machine.phase == .draining)
        // The last flush and late writes still reach the channel.
        let (flushChannel, pong) = try machine.flushRequested()
        #expect(flushChannel === channel)
        guard case .write = try machine.writeRequested(bytes("x"), bufferLimit: 10) else {
            Issue.record("a draining connection still writes")
            return
        }
        let answered = machine.pongReceived(generation: generation)
        #expect(answered === pong)
        // Closing twice does not drain twice; a draining connection never reconnects.
        let drainsAgain = machine.closeRequested()
        #expect(!drainsAgain)
        #expect(throws: NATSError.closed) { _ = try machine.attemptStarted() }
        guard case .none = machine.channelClosed(generation: generation) else {
            Issue.record("a channel closing while draining does not reconnect")
            return
        }
        #expect(throws: NATSError.closed) { _ = try machine.writeRequested(bytes("x"), bufferLimit: 10) }

        let closing = machine.closeFinished()
        #expect(machine.phase == .closed)
        #expect(closing.channel == nil)
        #expect(closing.subscriptions.map(\.sid) == [logs.sid])
        #expect(closing.requests.first === request.reply)
        #expect(throws: NATSError.closed) { _ = try machine.flushRequested() }
        #expect(throws: NATSError.closed) { _ = try machine.connectionAwaited() }
        #expect(throws: NATSError.closed) { _ = try machine.writeRequested(bytes("x"), bufferLimit: 10) }
        #expect(throws: NATSError.closed) { _ = try machine.attemptStarted() }
    }

    @Test func closingWhileReconnectingClosesAtOnceAndFailsTheWaiters() throws {
        var machine = Machine(pool: [Self.first])
        let generation = try connected(&machine, channel: FakeChannel("one"))
        _ = machine.channelClosed(generation: generation)
        let attempt = try machine.attemptStarted()
        let awaited = try machine.connectionAwaited()
        let waiter = try #require(awaited)
        _ = try machine.writeRequested(bytes("PUB a 1\r\nx\r\n"), bufferLimit: 100)
        let drains = machine.closeRequested()
        #expect(!drains)  // nothing to flush
        #expect(throws: NATSError.closed) { try machine.channelConnected(generation: attempt) }
        let closing = machine.closeFinished()
        #expect(closing.waiters.contains { $0 === waiter })
        #expect(machine.pending.readableBytes == 0)
        #expect(machine.phase == .closed)
    }

    @Test func aHandshakeThatEndsAfterCloseIsRefused() throws {
        var machine = Machine(pool: [Self.first])
        let generation = try machine.attemptStarted()
        try machine.channelConnected(generation: generation)
        _ = machine.closeRequested()
        _ = machine.closeFinished()
        #expect(throws: NATSError.closed) {
            _ = try machine.handshakeSucceeded(
                channel: FakeChannel("late"), info: ServerInfo(), server: Self.first, generation: generation)
        }
    }

    @Test func writabilityWaitersAreReleasedTogether() throws {
        var machine = Machine(pool: [Self.first])
        let generation = try connected(&machine, channel: FakeChannel("one"))
        let one = machine.writeBlocked(generation: generation, stillBlocked: true)
        let two = machine.writeBlocked(generation: generation, stillBlocked: true)
        let released = machine.becameWritable()
        #expect(released.count == 2 && released[0] === one && released[1] === two)
        let again = machine.becameWritable()
        #expect(again.isEmpty)
    }
}
