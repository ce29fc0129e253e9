import Foundation
import NATSTestSupport
import NIOCore
import Synchronization
import Testing

@testable import NATSClient

@Suite struct NATSParserTests {
    static let stream: [UInt8] = Array(
        ("INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n" + "PING\r\n"
            + "MSG logs.p1.web 7 11\r\nhello world\r\n"
            + "MSG a.b 9 _INBOX.x.1 0\r\n\r\n"
            + "HMSG js.x 2 34 39\r\nNATS/1.0\r\nA: 1\r\nA: 2\r\nB: x:y:z\r\n\r\nhello\r\n"
            + "HMSG _INBOX.r.2 3 28 28\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n" + "+OK\r\n"
            + "-ERR 'Permissions Violation for Publish to \"secret\"'\r\n"
            + "PONG\r\n").utf8)

    func parse(_ chunks: [ArraySlice<UInt8>]) throws -> [ServerOperation] {
        var decoder = NATSDecoder()
        var buffer = ByteBuffer()
        var operations: [ServerOperation] = []
        for chunk in chunks {
            buffer.writeBytes(chunk)
            while let operation = try decoder.next(&buffer) { operations.append(operation) }
            buffer.discardReadBytes()
        }
        return operations
    }

    func describe(_ operations: [ServerOperation]) -> [String] {
        operations.map { operation in
            switch operation {
            case .info(let bytes): "INFO \(bytes.readableBytes)"
            case .ping: "PING"
            case .pong: "PONG"
            case .ok: "OK"
            case .error(let text): "ERR \(text)"
            case .message(let message):
                "MSG \(message.subject) \(message.sid) \(message.replyTo ?? "-") \(String(buffer: message.payload)) status=\(message.status.map(String.init) ?? "-") \(message.headers?.fields.map { "\($0.name)=\($0.value)" }.joined(separator: ",") ?? "")"
            }
        }
    }

    static let expected = [
        "INFO 40", "PING", "MSG logs.p1.web 7 - hello world status=- ", "MSG a.b 9 _INBOX.x.1  status=- ",
        "MSG js.x 2 - hello status=- A=1,A=2,B=x:y:z", "MSG _INBOX.r.2 3 -  status=503 ", "OK",
        "ERR Permissions Violation for Publish to \"secret\"", "PONG",
    ]

    @Test func wholeStream() throws {
        #expect(describe(try parse([Self.stream[...]])) == Self.expected)
    }

    /// Every split point of the stream, in two pieces and byte by byte.
    @Test func splitAtEveryByteBoundary() throws {
        for split in 1..<Self.stream.count {
            let operations = try parse([Self.stream[..<split], Self.stream[split...]])
            #expect(describe(operations) == Self.expected, "split at \(split)")
        }
        #expect(describe(try parse(Self.stream.map { [$0][...] })) == Self.expected)
    }

    @Test func statusDescriptionAndMalformedInput() throws {
        let status = try NATSDecoder.parseHeaders(ByteBuffer(string: "NATS/1.0 404 No Messages\r\n\r\n"))
        #expect(status.status == 404)
        #expect(status.statusDescription == "No Messages")
        let spaced = try NATSDecoder.parseHeaders(
            ByteBuffer(
                string:
                    "NATS/1.0\t 409 \t Consumer Deleted \r\nNats-Msg-Id: \t h:s:1:9 \t\r\nX:\r\nnot a header\r\nY:a:b\r\n\r\n"
            ))
        #expect(spaced.status == 409)
        #expect(spaced.statusDescription == "Consumer Deleted")
        #expect(spaced["Nats-Msg-Id"] == "h:s:1:9")
        #expect(spaced["X"] == "")
        #expect(spaced["Y"] == "a:b")
        let plain = try NATSDecoder.parseHeaders(ByteBuffer(string: "NATS/1.0\r\n\r\n"))
        #expect(plain.status == nil && plain.statusDescription == nil)
        #expect(throws: NATSProtocolError.self) { try NATSDecoder.parseHeaders(ByteBuffer(string: "HTTP/1.1\r\n\r\n")) }
        #expect(throws: NATSProtocolError.self) { try NATSDecoder.parseHeaders(ByteBuffer(string: "")) }
        #expect(throws: NATSProtocolError.self) { try parse([Array("BOGUS x\r\n".utf8)[...]]) }
        #expect(throws: NATSProtocolError.self) { try parse([Array("MSG a\r\n".utf8)[...]]) }
        #expect(throws: NATSProtocolError.self) { try parse([Array("MSG a 1 3\r\nabcXY".utf8)[...]]) }
        let long = Array(repeating: UInt8(ascii: "x"), count: 5000)
        #expect(throws: NATSProtocolError.self) { try parse([long[...]]) }
    }

    @Test func messageLinesInAnyCaseWithTabsAndHeadersWithReply() throws {
        let input = Array(
            ("msg\tlogs.a\t1\t2\r\nhi\r\n" + "hmsg s 4 r.1 12 14\r\nNATS/1.0\r\n\r\nok\r\n"
                + "MSG  x  5  0\r\n\r\n").utf8)
        #expect(
            describe(try parse([input[...]])) == [
                "MSG logs.a 1 - hi status=- ", "MSG s 4 r.1 ok status=- ", "MSG x 5 -  status=- ",
            ])
        for bad in [
            "MSG a b 3\r\n", "MSG a 1 -3\r\n", "MSG a 1 x\r\n", "MSG a 1 2 3 4\r\n", "HMSG a 1 9 3\r\n",
            "HMSG a 1 3\r\n", "MSG a 1 99999999999999999999\r\n",
        ] {
            #expect(throws: NATSProtocolError.self, "\(bad)") { try parse([Array(bad.utf8)[...]]) }
        }
    }

    @Test func encoder() {
        var buffer = ByteBuffer()
        NATSEncoder.publish(
            into: &buffer, subject: "a.b", replyTo: nil, headers: nil, payload: ByteBuffer(string: "hi"))
        var headers = NATSHeaders()
        headers.append("Nats-Msg-Id", "x:1")
        NATSEncoder.publish(
            into: &buffer, subject: "c", replyTo: "r", headers: headers, payload: ByteBuffer(string: "hello"))
        NATSEncoder.subscribe(into: &buffer, subject: "logs.>", queueGroup: "q", sid: 12)
        NATSEncoder.unsubscribe(into: &buffer, sid: 12)
        #expect(
            String(buffer: buffer)
                == "PUB a.b 2\r\nhi\r\nHPUB c r 30 35\r\nNATS/1.0\r\nNats-Msg-Id: x:1\r\n\r\nhello\r\nSUB logs.> q 12\r\nUNSUB 12\r\n"
        )
        #expect(NATSEncoder.payloadSize(headers: headers, payload: ByteBuffer(string: "hello")) == 35)
    }

    @Test func encoderJetStreamFramesAndEdgeSizes() {
        var buffer = ByteBuffer()
        NATSEncoder.publish(
            into: &buffer, subject: "logs.p1.web-01", replyPrefix: "_INBOX.abc.7.", replyIndex: 1234,
            messageID: "web-01:ship:f00d:42", payload: ByteBuffer(string: "line"))
        NATSEncoder.publish(
            into: &buffer, subject: "s", replyPrefix: "_I.", replyIndex: 0, messageID: nil, payload: ByteBuffer())
        #expect(
            String(buffer: buffer)
                == "HPUB logs.p1.web-01 _INBOX.abc.7.1234 46 50\r\nNATS/1.0\r\nNats-Msg-Id: web-01:ship:f00d:42\r\n\r\nline\r\nPUB s _I.0 0\r\n\r\n"
        )
        // The size field crosses a digit boundary exactly where the payload does.
        for size in [0, 9, 10, 99, 100, 999, 1000, 65535] {
            var frame = ByteBuffer()
            let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
            NATSEncoder.publish(into: &frame, subject: "a", replyTo: nil, headers: nil, payload: payload)
            #expect(frame.readableBytes == 4 + 1 + 1 + String(size).count + 2 + size + 2)
            #expect(String(buffer: frame).hasPrefix("PUB a \(size)\r\n"))
        }
        // A CR or LF in a header value would end the header block early.
        var injected = NATSHeaders()
        injected.append("X-Line", "a\r\nb")
        var frame = ByteBuffer()
        NATSEncoder.publish(into: &frame, subject: "a", replyTo: nil, headers: injected, payload: ByteBuffer())
        #expect(String(buffer: frame) == "HPUB a 26 26\r\nNATS/1.0\r\nX-Line: a  b\r\n\r\n\r\n")
    }

    /// The batch writer's frames are byte for byte the encoder's, across
    /// the digit boundaries of the size field; a payload over max_payload is
    /// refused and leaves nothing behind.
    @Test func frameWriterWritesTheEncodersFramesAndRefusesOversize() {
        let sizes = [0, 1, 9, 10, 99, 100, 999, 1000, 4096, 4097]
        let subjects = ["a", "logs.p5.db-01.prod.example.com", "unknown"]
        var expected = ByteBuffer()
        var capacity = 0
        for (index, size) in sizes.enumerated() where size <= 4096 {
            let subject = subjects[index % subjects.count]
            NATSEncoder.publish(
                into: &expected, subject: subject, replyTo: nil, headers: nil,
                payload: ByteBuffer(repeating: UInt8(ascii: "a") + UInt8(index), count: size))
            capacity += FrameWriter.frameSize(subject: subject.utf8.count, payload: size)
        }
        #expect(capacity == expected.readableBytes)
        var messages = NATSConnection.PublishBuffer(maxPayload: 4096, capacity: 0)
        let refused = messages.appendFrames(capacity: capacity) { writer -> [Int] in
            var refused: [Int] = []
            for (index, size) in sizes.enumerated() {
                var subject = subjects[index % subjects.count]
                let payload = [UInt8](repeating: UInt8(ascii: "a") + UInt8(index), count: size)
                let written = subject.withUTF8 { subjectBytes in
                    payload.withUnsafeBytes {
                        writer.publish(subject: UnsafeRawBufferPointer(subjectBytes), payload: $0)
                    }
                }
                if !written { refused.append(index) }
            }
            #expect(writer.count == sizes.count - 1)
            return refused
        }
        #expect(refused == [9])
        #expect(messages.count == sizes.count - 1)
        #expect(messages.buffer == expected)
    }

    @Test func nkeysRoundTrip() throws {
        let (seed, pair) = NKeyPair.generateUser()
        #expect(seed.hasPrefix("SU"))
        #expect(pair.publicKey.hasPrefix("U"))
        #expect(pair.publicKey.count == 56)
        #expect(try NKeyPair(seed: seed).publicKey == pair.publicKey)
        var broken = Array(seed)
        broken[10] = broken[10] == "A" ? "B" : "A"
        #expect(throws: NATSError.self) { try NKeyPair(seed: String(broken)) }
        let creds = """
            -----BEGIN NATS USER JWT-----
            eyJhbGciOiJlZDI1NTE5In0.e30.sig
            ------END NATS USER JWT------

            -----BEGIN USER NKEY SEED-----
            \(seed)
            ------END USER NKEY SEED------
            """
        let credentials = try NATSCredentials(text: creds, path: "test.creds")
        #expect(credentials.jwt == "eyJhbGciOiJlZDI1NTE5In0.e30.sig")
        #expect(credentials.keyPair.publicKey == pair.publicKey)
        #expect(throws: NATSError.self) { try NATSCredentials(text: "nothing", path: "x.creds") }
    }
}

/// Against a real nats-server on a free loopback port.
@Suite(.serialized) struct NATSConnectionTests {
    func connect(_ server: NATSServer, _ configure: (inout NATSOptions) -> Void = { _ in }) async throws
        -> NATSConnection
    {
        var options = NATSOptions.forTests(server.url)
        configure(&options)
        return try await NATSConnection.connect(options)
    }

    @Test func publishSubscribeWithAndWithoutHeaders() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let subscriber = try await connect(server)
        let publisher = try await connect(server)
        let subscription = try await subscriber.subscribe("logs.>")
        try await subscriber.flush()
        var headers = NATSHeaders()
        headers.append("Nats-Msg-Id", "a:b:1")
        headers.append("X-Note", "value: with colons")
        try await publisher.publish([
            .init(subject: "logs.p1.web-01", payload: ByteBuffer(string: "plain")),
            .init(subject: "logs.p2.db.example.com", payload: ByteBuffer(string: "with headers"), headers: headers),
            .init(subject: "other", payload: ByteBuffer(string: "not for us")),
            .init(subject: "logs.empty", payload: ByteBuffer()),
        ])
        try await publisher.flush()
        let first = try #require(await subscription.next())
        #expect(first.subject == "logs.p1.web-01")
        #expect(String(buffer: first.payload) == "plain")
        #expect(first.headers == nil)
        let second = try #require(await subscription.next())
        #expect(second.subject == "logs.p2.db.example.com")
        #expect(second.headers?["Nats-Msg-Id"] == "a:b:1")
        #expect(second.headers?["X-Note"] == "value: with colons")
        let third = try #require(await subscription.next())
        #expect(third.subject == "logs.empty")
        #expect(third.payload.readableBytes == 0)
        await publisher.close()
        await subscriber.close()
    }

    /// A handler subscription sees every message in order, and nothing once
    /// it is unsubscribed, even messages the server had already sent.
    @Test func handlerSubscriptionInOrderAndSilentAfterUnsubscribe() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let connection = try await connect(server)
        let seen = Mutex<[String]>([])
        let handle = Mutex<NATSSubscription?>(nil)
        let subscription = try await connection.subscribe("h.>") { message in
            let count = seen.withLock { seen in
                seen.append(String(buffer: message.payload))
                return seen.count
            }
            // Unsubscribed from inside the handler while thousands more are on their way.
            if count == 1000 { handle.withLock { $0 }?.unsubscribe() }
        }
        handle.withLock { $0 = subscription }
        try await connection.flush()
        try await connection.publish((0..<20_000).map { .init(subject: "h.x", payload: ByteBuffer(string: "\($0)")) })
        try await connection.flush()
        try await connection.flush()
        #expect(seen.withLock { $0 } == (0..<1000).map(String.init))
        await connection.close()
    }

    @Test func queueGroupsSplitTheWork() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let a = try await connect(server)
        let b = try await connect(server)
        let subA = try await a.subscribe("work", queueGroup: "workers")
        let subB = try await b.subscribe("work", queueGroup: "workers")
        try await a.flush()
        try await b.flush()
        let publisher = try await connect(server)
        try await publisher.publish((0..<1000).map { .init(subject: "work", payload: ByteBuffer(string: "\($0)")) })
        try await publisher.flush()
        var seen: Set<String> = []
        var fromA = 0
        var fromB = 0
        while seen.count < 1000 {
            if subA.bufferedCount > 0, let message = await subA.next() {
                seen.insert(String(buffer: message.payload))
                fromA += 1
            } else if subB.bufferedCount > 0, let message = await subB.next() {
                seen.insert(String(buffer: message.payload))
                fromB += 1
            } else {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        #expect(fromA + fromB == 1000)
        #expect(fromA > 100 && fromB > 100, "a: \(fromA), b: \(fromB)")
        for connection in [a, b, publisher] { await connection.close() }
    }

    @Test func requestReplyAndNoResponders() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let responder = try await connect(server)
        let subscription = try await responder.subscribe("echo")
        try await responder.flush()
        let task = Task {
            for await request in subscription {
                guard let reply = request.replyTo else { continue }
                try await responder.publish(
                    reply, payload: ByteBuffer(string: "echo: " + String(buffer: request.payload)))
            }
        }
        let client = try await connect(server)
        for index in 0..<20 {
            let reply = try await client.request("echo", payload: ByteBuffer(string: "\(index)"))
            #expect(String(buffer: reply.payload) == "echo: \(index)")
        }
        await #expect(throws: NATSError.self) {
            _ = try await client.request("nobody.listens", payload: ByteBuffer(), timeout: .seconds(5))
        }
        do {
            _ = try await client.request("nobody.listens", payload: ByteBuffer())
        } catch NATSError.noResponders(let subject) {
            #expect(subject == "nobody.listens")
        }
        task.cancel()
        await client.close()
        await responder.close()
    }

    @Test func maxPayloadIsRejectedBeforeWriting() async throws {
        let server = try await NATSServer(configuration: "max_payload: 1024")
        defer { server.stop() }
        let connection = try await connect(server)
        #expect(connection.maxPayload == 1024)
        await #expect {
            try await connection.publish("big", payload: ByteBuffer(repeating: 0x41, count: 2000))
        } throws: { error in
            "\(error)"
                == "a message of 2000 bytes for 'big' exceeds the server's max_payload of 1024 bytes; raise max_payload on the server or split the message"
        }
        try await connection.publish("small", payload: ByteBuffer(repeating: 0x41, count: 1000))
        try await connection.flush()  // the connection is still fine
        await connection.close()
    }

    @Test func permissionsViolationIsReportedAndTheConnectionStays() async throws {
        let server = try await NATSServer(
            configuration: """
                authorization {
                  timeout: 60
                  users = [ { user: app, password: secret, permissions: { publish: { deny: ["secret.>"] } } } ]
                }
                """)
        defer { server.stop() }
        let connection = try await connect(server) {
            $0.user = "app"
            $0.password = "secret"
        }
        var events = connection.events.makeAsyncIterator()
        #expect(await events.next() == .connected(server: "nats://127.0.0.1:\(server.port)"))
        try await connection.publish("secret.plans", payload: ByteBuffer(string: "x"))
        try await connection.flush()
        let event = await events.next()
        guard case .serverError(let message) = event else {
            Issue.record("expected a server error event, got \(String(describing: event))")
            return
        }
        #expect(message.contains("Permissions Violation for Publish to \"secret.plans\""))
        try await connection.publish("public", payload: ByteBuffer(string: "x"))
        try await connection.flush()
        await connection.close()
    }

    @Test func userPasswordTokenAndWrongPassword() async throws {
        let server = try await NATSServer(
            configuration: "authorization { user: ops, password: \"s3cret\", timeout: 60 }")
        defer { server.stop() }
        let viaOptions = try await connect(server) {
            $0.user = "ops"
            $0.password = "s3cret"
        }
        try await viaOptions.flush()
        await viaOptions.close()
        let viaURL = try await NATSConnection.connect(
            NATSOptions(servers: ["nats://ops:s3cret@127.0.0.1:\(server.port)"]))
        try await viaURL.flush()
        await viaURL.close()

        let started = ContinuousClock.now
        await #expect {
            _ = try await connect(server) {
                $0.user = "ops"
                $0.password = "wrong"
            }
        } throws: { error in
            guard case NATSError.authorizationFailed(let host, let message) = error else { return false }
            return host == "nats://127.0.0.1:\(server.port)" && message.contains("Authorization Violation")
        }
        #expect(ContinuousClock.now - started < .seconds(3))

        let tokenServer = try await NATSServer(configuration: "authorization { token: \"t0ken\", timeout: 60 }")
        defer { tokenServer.stop() }
        let withToken = try await connect(tokenServer) { $0.token = "t0ken" }
        try await withToken.flush()
        await withToken.close()
        await #expect(throws: NATSError.self) { _ = try await connect(tokenServer) { $0.token = "nope" } }
    }

    @Test func nkeyAuthentication() async throws {
        let (seed, pair) = NKeyPair.generateUser()
        let server = try await NATSServer(
            configuration: "authorization { timeout: 60, users = [ { nkey: \(pair.publicKey) } ] }")
        defer { server.stop() }
        let seedFile = server.directory + "/user.nk"
        try seed.write(toFile: seedFile, atomically: true, encoding: .utf8)
        let connection = try await connect(server) { $0.nkeySeedFile = seedFile }
        try await connection.flush()
        await connection.close()
        let (otherSeed, _) = NKeyPair.generateUser()
        try otherSeed.write(toFile: seedFile, atomically: true, encoding: .utf8)
        await #expect(throws: NATSError.self) { _ = try await connect(server) { $0.nkeySeedFile = seedFile } }
    }

    @Test func tlsWithVerification() async throws {
        let directory = NSTemporaryDirectory() + "logpipe-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func openssl(_ arguments: [String]) async throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try process.run()
            // Poll: a blocking wait would hold a thread of the shared pool.
            while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
            #expect(process.terminationStatus == 0, "openssl \(arguments.joined(separator: " "))")
        }
        try await openssl([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=LogPipe Test CA",
        ])
        try await openssl([
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=localhost",
        ])
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(
            toFile: directory + "/san.ext", atomically: true, encoding: .utf8)
        try await openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "server.pem", "-days", "1", "-extfile", "san.ext",
        ])
        let server = try await NATSServer(
            configuration: "tls { cert_file: \"\(directory)/server.pem\", key_file: \"\(directory)/server.key\" }")
        defer { server.stop() }

        var tls = NATSOptions.TLS()
        tls.caFile = directory + "/ca.pem"
        let connection = try await NATSConnection.connect(
            {
                var o = NATSOptions(servers: ["tls://127.0.0.1:\(server.port)"]); o.tls = tls; return o
            }())
        let subscription = try await connection.subscribe("secure")
        try await connection.publish("secure", payload: ByteBuffer(string: "over TLS"))
        #expect(String(buffer: try #require(await subscription.next()).payload) == "over TLS")
        await connection.close()

        // Without the CA the certificate is not trusted: a clear TLS error.
        await #expect {
            _ = try await NATSConnection.connect(NATSOptions(servers: ["tls://127.0.0.1:\(server.port)"]))
        } throws: { error in
            guard case NATSError.tlsFailed = error else { return false }
            return true
        }
        // A plain client against a TLS server is told so.
        await #expect {
            _ = try await NATSConnection.connect(NATSOptions(servers: ["nats://127.0.0.1:\(server.port)"]))
        } throws: { error in
            "\(error)".contains("TLS")
        }
    }

    @Test func unreachableServerFailsWithTheReason() async throws {
        let server = try await NATSServer()
        let port = server.port
        server.stop()
        await #expect {
            _ = try await NATSConnection.connect(NATSOptions(servers: ["nats://127.0.0.1:\(port)"]))
        } throws: { error in
            "\(error)".hasPrefix(
                "cannot connect to nats://127.0.0.1:\(port): nats://127.0.0.1:\(port): Connection refused")
        }
    }

    /// The server restarts in the middle of a publish stream: the client
    /// reconnects by itself and publishing goes on. Core NATS cannot promise
    /// more: messages written just before the server went away may be lost,
    /// and a publisher that re-sends after a failed flush may deliver twice.
    @Test func reconnectsAfterAServerRestart() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let publisher = try await connect(server)
        var events = publisher.events.makeAsyncIterator()
        _ = await events.next()  // connected
        let port = server.port
        try await publisher.publish("before", payload: ByteBuffer(string: "1"))
        try await publisher.flush()
        server.kill()
        #expect(await events.next().map { if case .disconnected = $0 { true } else { false } } == true)
        // Published while the server is down: kept in the reconnect buffer.
        try await publisher.publish("during", payload: ByteBuffer(string: "2"))
        try await server.start(port: port)
        let subscriber = try await connect(server)
        let subscription = try await subscriber.subscribe(">")
        try await subscriber.flush()
        try await publisher.waitUntilConnected()
        #expect(await events.next() == .connected(server: "nats://127.0.0.1:\(port)"))
        try await publisher.publish("after", payload: ByteBuffer(string: "3"))
        try await publisher.flush()
        let message = try #require(await subscription.next())
        // "during" was sent at reconnect, before the subscriber may have
        // subscribed; "after" must arrive.
        #expect(["during", "after"].contains(message.subject))
        await publisher.close()
        await subscriber.close()
    }
}

@Suite struct AsyncPromiseTests {
    @Test func timesOutAndDeliversValues() async throws {
        // A promise never kept ends in the time-out error (reaching the
        // next line at all shows it did not hang; on a busy machine the
        // 100 ms can take long, so no bound on the wall time).
        let never = AsyncPromise<Int>()
        await #expect(throws: NATSError.self) {
            try await never.value(timeout: .milliseconds(100), onTimeout: NATSError.timeout("x"))
        }
        // A value that comes delivers; the time-out is only a safety net.
        let later = AsyncPromise<Int>()
        Task {
            try await Task.sleep(for: .milliseconds(20))
            later.succeed(7)
        }
        #expect(try await later.value(timeout: .seconds(600), onTimeout: NATSError.timeout("x")) == 7)
    }

    /// One timer for many time-outs: an earlier entry scheduled after a
    /// later one still fires first, cancelled entries never fire, and every
    /// other one fires once.
    @Test func deadlinesFireInOrderAndCancelledOnesNever() async throws {
        let deadlines = Deadlines()
        let fired = Mutex<[Int]>([])
        let (events, continuation) = AsyncStream.makeStream(of: Int.self)
        func entry(_ name: Int, after delay: Duration) -> UInt64 {
            deadlines.schedule(after: delay) {
                fired.withLock { $0.append(name) }
                continuation.yield(name)
            }
        }
        _ = entry(3, after: .milliseconds(900))
        let cancelled = entry(99, after: .milliseconds(300))
        _ = entry(1, after: .milliseconds(100))
        _ = entry(2, after: .milliseconds(500))
        deadlines.cancel(cancelled)
        var seen: [Int] = []
        for await name in events {
            seen.append(name)
            if seen.count == 3 { break }
        }
        #expect(seen == [1, 2, 3])
        #expect(fired.withLock { $0 } == [1, 2, 3])
    }
}

@Suite struct PublishTrackerTests {
    /// Batches published together and waited for one after the other time
    /// out together: each deadline counts from its publish. Counted from
    /// each wait, five unanswered batches took five timeouts (a sink's
    /// retries after an outage came minutes late, past the stream's
    /// duplicate_window).
    @Test func deadlinesCountFromThePublish() async {
        let trackers = (0..<5).map { PublishTracker(count: 2, batch: UInt64($0)) }
        let timeout: Duration = .seconds(3)
        let first = ContinuousClock.now
        await trackers[0].wait(until: trackers[0].publishedAt + timeout)
        #expect(ContinuousClock.now - first >= timeout - .milliseconds(50))
        // The others were published with the first: their deadlines have
        // passed too, and waiting for them takes no time (counted from the
        // wait, it would take another timeout each). No timer is involved,
        // so a busy machine cannot make this slow.
        let rest = ContinuousClock.now
        for tracker in trackers.dropFirst() { await tracker.wait(until: tracker.publishedAt + timeout) }
        #expect(ContinuousClock.now - rest < timeout, "\(ContinuousClock.now - rest)")
        #expect(trackers.allSatisfy { $0.remaining == 2 })
        // Answered before its deadline, a tracker ends the wait at once.
        let answered = PublishTracker(count: 1, batch: 9)
        answered.resolve(0, .stored(sequence: 1, duplicate: false))
        let before = ContinuousClock.now
        await answered.wait(until: .now + .seconds(600))
        #expect(ContinuousClock.now - before < .seconds(60))
    }
}

@Suite struct PubAckParsingTests {
    func parse(_ text: String, status: Int? = nil) -> String {
        var headers: NATSHeaders?
        if let status {
            headers = NATSHeaders()
            headers!.status = status
        }
        let message = NATSMessage(
            subject: "_INBOX.x.1.2", sid: 1, replyTo: nil, headers: headers, payload: ByteBuffer(string: text))
        switch JetStreamPublisher.result(of: message) {
        case .stored(let sequence, let duplicate): return "stored \(sequence) \(duplicate)"
        case .noResponders: return "503"
        case .rejected(let error): return "rejected \(error.code) \(error.err_code ?? 0) \(error.description)"
        }
    }

    @Test func serverFormats() {
        // As nats-server 2.9 writes them (a space after some colons).
        #expect(parse(#"{"stream":"LOGS", "seq": 42}"#) == "stored 42 false")
        #expect(parse(#"{"stream":"LOGS","seq":7,"duplicate": true}"#) == "stored 7 true")
        #expect(parse(#"{"stream":"LOGS","domain":"hub","seq":9}"#) == "stored 9 false")
        #expect(
            parse(#"{"error":{"code":400,"err_code":10054,"description":"maximum message size exceeded"}}"#)
                == "rejected 400 10054 maximum message size exceeded")
        #expect(parse("", status: 503) == "503")
        #expect(JetStreamPublisher.tokens("_INBOX.abc.12.345")! == (12, 345))
        #expect(JetStreamPublisher.tokens("_INBOX.abc.x") == nil)
    }

    @Test func ackSubjectMetadata() {
        let old = JetStreamMetadata(ackSubject: "$JS.ACK.LOGS.central-p3.2.1234.567.1795687200000000000.10")
        #expect(
            old
                == JetStreamMetadata(
                    ackSubject: "$JS.ACK.hub.ACCHASH.LOGS.central-p3.2.1234.567.1795687200000000000.10.rand"))
        #expect(old?.stream == "LOGS")
        #expect(old?.consumer == "central-p3")
        #expect(old?.delivered == 2)
        #expect(old?.streamSequence == 1234)
        #expect(old?.consumerSequence == 567)
        #expect(old?.pending == 10)
        #expect(JetStreamMetadata(ackSubject: "logs.p1.web") == nil)
        #expect(
            JetStreamMetadata(ackSubject: "$JS.ACK.hub.H.LOGS.c.1.2.3.4.5")?.streamSequence == 2)  // 11 tokens
        for bad in [
            "$JS.ACK.LOGS.c.x.1234.567.0.10",  // delivered not a number
            "$JS.ACK.LOGS.c.1..567.0.10",  // empty sequence
            "$JS.ACK.LOGS.c.1.99999999999999999999.567.0.10",  // sequence past UInt64
            "$JS.ACK.LOGS.c.1.2.3.4",  // 8 tokens
            "$JS.ACK.LOGS.c.1.2.3.4.5.6",  // 10 tokens
            "$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l",  // 14 tokens
            "$JS.NAK.LOGS.c.1.2.3.4.5", "",
        ] {
            #expect(JetStreamMetadata(ackSubject: bad) == nil, "\(bad)")
        }
    }

    @Test func streamConfigDifferences() {
        var ours = StreamConfig(name: "LOGS", subjects: ["logs.>"])
        var theirs = ours
        #expect(ours.differences(from: theirs).isEmpty)
        theirs.storage = "memory"
        ours.max_age = 86_400_000_000_000
        #expect(
            ours.differences(from: theirs) == [
                "storage: file (pipeline) vs memory (server)", "max_age: 86400000000000 (pipeline) vs 0 (server)",
            ])
    }
}
