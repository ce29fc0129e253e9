import Foundation

/// How to reach and authenticate with a NATS server or cluster.
public struct NATSOptions: Sendable {
    /// TLS settings.
    public struct TLS: Sendable {
        /// CA certificates (PEM) that sign the server's certificate; the system
        /// roots when `nil`.
        public var caFile: String?
        /// Client certificate (PEM) for mutual TLS.
        public var certFile: String?
        /// Client private key (PEM) for mutual TLS.
        public var keyFile: String?
        /// Verify the server's certificate and host name (on by default).
        public var verify = true

        /// Default TLS settings: system roots, verification on.
        public init() {}
    }

    /// Server URLs: `nats://host:port`, `tls://host:port`, `host:port`;
    /// `nats://user:password@host` or `nats://token@host` carry credentials.
    public var servers: [String]
    /// The connection name the server shows.
    public var name = "logpipe"
    /// User name (with ``password``).
    public var user: String?
    /// Password (with ``user``).
    public var password: String?
    /// Authentication token.
    public var token: String?
    /// A file holding an NKey user seed (`SU...`).
    public var nkeySeedFile: String?
    /// A `.creds` file (user JWT and NKey seed).
    public var credsFile: String?
    /// TLS; `nil` unless a `tls://` URL or the server asks for it.
    public var tls: TLS?
    /// Time to connect and finish the handshake with one server.
    public var connectTimeout: Duration = .seconds(5)
    /// Interval of client PINGs that detect a dead connection.
    public var pingInterval: Duration = .seconds(120)
    /// Unanswered PINGs after which the connection counts as dead.
    public var maxPingsOut = 2
    /// First wait between reconnect attempts; it doubles up to ``maxReconnectWait``, with jitter.
    public var reconnectWait: Duration = .milliseconds(100)
    /// Longest wait between reconnect attempts.
    public var maxReconnectWait: Duration = .seconds(2)
    /// Bytes of publishes kept while disconnected; past it, publishers wait.
    public var reconnectBufferBytes = 8 * 1024 * 1024
    /// Prefix of reply subjects for requests.
    public var inboxPrefix = "_INBOX"

    /// Options for `servers`.
    public init(servers: [String]) {
        self.servers = servers
    }
}

extension NATSOptions {
    /// `url` with the password of its user information replaced by `***`,
    /// for messages and logs; works on text that is no valid URL too
    /// (`nats://alice:pw@host:notaport`, `alice:pw@host`).
    public static func redacted(_ url: String) -> String {
        let schemeEnd = url.range(of: "://")?.upperBound ?? url.startIndex
        let authorityEnd = url[schemeEnd...].firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? url.endIndex
        guard let at = url[schemeEnd..<authorityEnd].lastIndex(of: "@") else { return url }
        guard let colon = url[schemeEnd..<at].firstIndex(of: ":") else { return url }
        return String(url[..<url.index(after: colon)]) + "***" + String(url[at...])
    }

    /// Checks that `url` is a server URL the client can connect to
    /// (`nats://` or `tls://`, a host, a port in 1...65535, no path).
    ///
    /// - Throws: ``NATSError/invalidURL(_:)`` with the password redacted.
    public static func validateServerURL(_ url: String) throws {
        _ = try ServerAddress(parsing: url)
    }
}

/// A server address parsed from a URL.
struct ServerAddress: Sendable, Hashable, CustomStringConvertible {
    var host: String
    var port: Int
    var tls: Bool
    var user: String?
    var password: String?

    init(host: String, port: Int, tls: Bool, user: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password
    }

    init(parsing text: String) throws {
        var url = text.trimmingCharacters(in: .whitespaces)
        if !url.contains("://") { url = "nats://" + url }
        let shown = NATSOptions.redacted(text)
        guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
            throw NATSError.invalidURL(shown)
        }
        let scheme = components.scheme?.lowercased() ?? "nats"
        guard ["nats", "tls"].contains(scheme) else { throw NATSError.invalidURL(shown) }
        if let port = components.port, !(1...65535).contains(port) { throw NATSError.invalidURL(shown) }
        let path = components.percentEncodedPath
        guard path.isEmpty || path == "/", components.query == nil, components.fragment == nil else {
            throw NATSError.invalidURL(shown)
        }
        self.host = host
        self.port = components.port ?? 4222
        self.tls = scheme == "tls"
        self.user = components.user?.removingPercentEncoding
        self.password = components.password?.removingPercentEncoding
    }

    var description: String { "\(tls ? "tls" : "nats")://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
}

/// What went wrong, with the server and what to change.
public enum NATSError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A server URL that cannot be parsed.
    case invalidURL(String)
    /// No server of the pool could be reached.
    case connectionFailed(servers: [String], reason: String)
    /// The server rejected the credentials.
    case authorizationFailed(server: String, message: String)
    /// TLS is required by one side but not configured by the other, or failed.
    case tlsFailed(server: String, reason: String)
    /// A message larger than the server's `max_payload`.
    case maxPayloadExceeded(subject: String, size: Int, maxPayload: Int)
    /// A subject with whitespace or empty tokens.
    case invalidSubject(String)
    /// A request nobody listens to (503).
    case noResponders(subject: String)
    /// No answer within the time allowed.
    case timeout(String)
    /// The connection broke before the operation completed; it reconnects.
    case disconnected
    /// The connection was closed by the application.
    case closed
    /// The server refused an operation (`-ERR`).
    case serverError(String)
    /// A credentials file that cannot be used.
    case invalidCredentials(path: String, reason: String)
    /// A JetStream stream that does not exist (yet).
    case streamNotFound(stream: String)

    public var description: String {
        switch self {
        case .invalidURL(let url):
            "'\(url)' is not a NATS server URL; write nats://host:4222, tls://host:4222 or host:port"
        case .connectionFailed(let servers, let reason):
            "cannot connect to \(servers.joined(separator: ", ")): \(reason); check that nats-server runs there and the address is right"
        case .authorizationFailed(let server, let message):
            "\(server) rejected the credentials (\(message)); check user and password, token, nkey or creds file"
        case .tlsFailed(let server, let reason):
            "TLS with \(server) failed: \(reason)"
        case .maxPayloadExceeded(let subject, let size, let maxPayload):
            "a message of \(size) bytes for '\(subject)' exceeds the server's max_payload of \(maxPayload) bytes; raise max_payload on the server or split the message"
        case .invalidSubject(let subject):
            "'\(subject)' is not a valid subject (no spaces, no empty tokens)"
        case .noResponders(let subject):
            "no responders for '\(subject)': nothing subscribes to it"
        case .timeout(let what):
            "timed out: \(what)"
        case .disconnected:
            "the connection to the server was lost (reconnecting)"
        case .closed:
            "the connection is closed"
        case .serverError(let message):
            "the server reported: \(message)"
        case .invalidCredentials(let path, let reason):
            "cannot use credentials from \(path): \(reason)"
        case .streamNotFound(let stream):
            "stream \(stream) does not exist; create it (a jetstream sink with stream.create: true does)"
        }
    }
}

/// Connection life-cycle events, for logs and metrics.
public enum NATSConnectionEvent: Sendable, Equatable {
    /// Connected (or reconnected) to the server.
    case connected(server: String)
    /// The connection broke; reconnecting.
    case disconnected(reason: String)
    /// The server announced lame-duck mode; moving to another server.
    case lameDuck(server: String)
    /// The server reported an error that does not close the connection
    /// (a permissions violation, for example).
    case serverError(String)
    /// Messages dropped for a subscription whose consumer fell behind.
    case slowConsumer(subject: String, dropped: Int)
    /// Closed for good.
    case closed
}
