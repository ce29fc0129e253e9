import LogPipe
import LogPipeBase
import Logging
import NATSClient

/// The connection options every NATS stage shares, as a pipeline file gives
/// them: `servers`, `auth`, `tls`, `connect_timeout`, `name`.
struct NATSConnectionSettings: StageSettings {
    struct Auth: StageSettings {
        var user: String?
        var password: String?
        var token: String?
        var nkeySeedFile: String?
        var credsFile: String?
    }

    struct TLS: StageSettings {
        var caFile: String?
        var certFile: String?
        var keyFile: String?
        var verify = NATSOptions.TLS().verify
    }

    var servers: [String] = []
    var auth = Auth()
    var tls = TLS()
    var connectTimeout = NATSOptions(servers: []).connectTimeout
    var name: String?
}

/// Settings of a stage that connects to NATS.
protocol NATSStageSettings: StageSettings {
    var connection: NATSConnectionSettings { get set }
}

enum NATSStageOptions {
    static let connectionOptions: [StageOption<NATSConnectionSettings>] = [
        .stringList(
            "servers", \.servers, required: true,
            "Server URLs: `nats://host:4222`, `tls://host:4222`; credentials may sit in the URL; an entry may list several, separated by commas (`${NATS_URL}` = `nats://a:4222,nats://b:4222`)."
        ),
        .object(
            "auth", \.auth,
            [
                .string("user", \.user, "User name."),
                .string("password", \.password, "Password."),
                .string("token", \.token, "Authentication token."),
                .string("nkey_seed_file", \.nkeySeedFile, "File holding an NKey user seed (`SU...`)."),
                .string("creds_file", \.credsFile, "A `.creds` file (user JWT and NKey seed)."),
            ],
            "Credentials: user and password, a token, an NKey seed file or a creds file."
        ),
        .object(
            "tls", \.tls,
            [
                .string("ca_file", \.caFile, "CA certificates (PEM) for the server's certificate."),
                .string("cert_file", \.certFile, "Client certificate (PEM), for mutual TLS."),
                .string("key_file", \.keyFile, "Client private key (PEM), for mutual TLS."),
                .boolean("verify", \.verify, "Verify the server's certificate and name."),
            ],
            "TLS settings (a `tls://` URL or a server that requires TLS turns TLS on)."
        ),
        .duration("connect_timeout", \.connectTimeout, "Time to connect to one server."),
        .string("name", \.name, "Connection name shown by the server (default: logpipe-<stage>)."),
    ]

    /// The connection options of a NATS stage with settings `Settings`.
    static func options<Settings: NATSStageSettings>(for _: Settings.Type) -> [StageOption<Settings>] {
        connectionOptions.map { $0.lifted(\Settings.connection) }
    }

    /// The client options of `settings`, checked; errors point at `options`.
    static func make(_ settings: NATSConnectionSettings, _ options: StageOptions) throws -> NATSOptions {
        // An entry may hold several URLs separated by commas, as NATS_URL
        // does for the nats tools: `servers: ["${NATS_URL}"]` then takes a
        // whole cluster from one variable.
        let servers = settings.servers.flatMap {
            $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        if servers.isEmpty {
            throw options.error(
                "servers", "needs at least one server URL", hint: "servers: [\"nats://127.0.0.1:4222\"]")
        }
        var client = NATSOptions(servers: servers)
        for server in servers {
            do {
                try NATSOptions.validateServerURL(server)
            } catch {
                // The message shows the URL with its password redacted.
                throw options.error(
                    "servers", "'\(NATSOptions.redacted(server))' is not a NATS server URL",
                    hint: "write nats://host:4222 or tls://host:4222 (a port from 1 to 65535, no path)")
            }
        }
        client.name = settings.name ?? "logpipe-\(options.stageName)"
        client.connectTimeout = settings.connectTimeout
        if let auth = options.object("auth") {
            client.user = settings.auth.user
            client.password = settings.auth.password
            client.token = settings.auth.token
            client.nkeySeedFile = settings.auth.nkeySeedFile
            client.credsFile = settings.auth.credsFile
            if client.password != nil, client.user == nil {
                throw auth.error("password", "a password needs a user", hint: "add auth.user")
            }
        }
        if let tls = options.object("tls") {
            var configuration = NATSOptions.TLS()
            configuration.caFile = settings.tls.caFile
            configuration.certFile = settings.tls.certFile
            configuration.keyFile = settings.tls.keyFile
            configuration.verify = settings.tls.verify
            if (configuration.certFile == nil) != (configuration.keyFile == nil) {
                throw tls.error("cert_file", "mutual TLS needs both cert_file and key_file")
            }
            client.tls = configuration
        }
        return client
    }

    /// Checks a JetStream stream or consumer name: the server takes it as a
    /// subject token (`$JS.API.STREAM.INFO.<name>`), so `.`, `*`, `>`,
    /// whitespace and path separators make it another subject and the
    /// request times out instead of failing.
    static func checkName(_ name: String, option: String, in options: StageOptions) throws {
        let forbidden: Set<Character> = [".", "*", ">", "/", "\\", " ", "\t", "\n", "\r"]
        if name.isEmpty || name.contains(where: { forbidden.contains($0) }) || name.utf8.count > 255 {
            throw options.error(
                option, "'\(name)' is not a valid JetStream name",
                hint: "use letters, digits, '-' and '_' (no '.', '*', '>', '/', '\\' or spaces), e.g. LOGS")
        }
    }

    /// The `subject_pattern` option, parsed.
    static func subjectPattern(_ text: String?, _ options: StageOptions) throws -> SubjectPattern? {
        guard let text else { return nil }
        do {
            return try SubjectPattern(text)
        } catch let error as Template.ParseError {
            throw options.error("subject_pattern", error.message, hint: error.hint)
        }
    }

    /// Connects, logging connection events for the stage until it ends.
    static func connectLoggingEvents(_ options: NATSOptions, context: StageContext) async throws -> (
        NATSConnection, Task<Void, Never>
    ) {
        let metrics = context.metrics
        // Not ready (/ready, the status line) until the first connection is up.
        let connecting = "a NATS connection: connecting"
        metrics.waitingFor = connecting
        let connection: NATSConnection
        do {
            connection = try await NATSConnection.connect(options, logger: context.logger)
        } catch {
            metrics.waitingFor = nil
            throw error
        }
        if metrics.waitingFor == connecting { metrics.waitingFor = nil }
        let logger = context.logger
        let reconnecting = "a NATS connection: reconnecting"
        metrics.observe("nats_connected") { connection.connectedServer == nil ? 0 : 1 }
        metrics.observe("nats_rtt_seconds") {
            connection.roundTripTime?.inSeconds
        }
        let events = Task {
            for await event in connection.events {
                switch event {
                case .connected(let server):
                    logger.info("connected to \(server)")
                    if metrics.waitingFor?.hasPrefix(reconnecting) == true { metrics.waitingFor = nil }
                case .disconnected(let reason):
                    metrics.count("disconnects")
                    logger.warning("disconnected: \(reason); reconnecting")
                    // Shown in the status line and /ready until reconnected.
                    if metrics.waitingFor == nil { metrics.waitingFor = "\(reconnecting) (\(reason))" }
                case .lameDuck(let server): logger.notice("\(server) is in lame-duck mode; moving")
                case .serverError(let message): logger.error("server error: \(message)")
                case .slowConsumer(let subject, let dropped):
                    logger.warning(
                        "'\(subject)': \(dropped) messages dropped so far (the pipeline is slower than the subscription)"
                    )
                case .closed: return
                }
            }
        }
        return (connection, events)
    }
}

extension Task where Failure == any Error {
    /// The task's value; cancelling the caller (the shutdown deadline
    /// cancelling a stage) cancels this task too, and runs `onCancel` (to
    /// close the channel it waits on). An unstructured task does not inherit
    /// its creator's cancellation, so a sink awaiting its settling task
    /// would otherwise wait for a retry loop forever.
    func valueCancelledWithCaller(onCancel: @Sendable () -> Void = {}) async throws -> Success {
        try await withTaskCancellationHandler {
            try await value
        } onCancel: {
            cancel()
            onCancel()
        }
    }
}

/// Waiting for something a stage needs before it can work (a server, a
/// stream): warns when the wait has lasted `grace` (at once by default) and
/// once a minute after, shows it as the stage's `waitingFor` (the status
/// line), and says when it ends. A wait shorter than `grace` passes
/// without a word.
struct Waiting {
    let context: StageContext
    let grace: Duration
    private var since: ContinuousClock.Instant?
    private var warned: ContinuousClock.Instant?

    init(context: StageContext, grace: Duration = .zero) {
        self.context = context
        self.grace = grace
    }

    /// Notes that the stage still waits, for `reason`.
    mutating func still(_ what: String, because reason: String) {
        let now = ContinuousClock.now
        let start = since ?? now
        since = start
        let waited = now - start
        guard waited >= grace else { return }
        context.metrics.waitingFor = what
        if warned.map({ now - $0 >= .seconds(60) }) ?? true {
            warned = now
            context.logger.warning(
                "waiting for \(what)\(waited >= .seconds(1) ? " (\(Units.format(waited)) so far)" : ""): \(reason); starting by itself once it is there"
            )
        }
    }

    /// Notes that the wait is over.
    mutating func over(_ what: String) {
        if let since, warned != nil {
            context.logger.notice("\(what) is there after \(Units.format(ContinuousClock.now - since)); starting")
        }
        context.metrics.waitingFor = nil
        since = nil
        warned = nil
    }

    /// Sleeps a second between attempts, ending early when `stopping` says so.
    static func pause(until stopping: () -> Bool) async throws {
        for _ in 0..<10 where !stopping() {
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
