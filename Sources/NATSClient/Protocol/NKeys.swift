import Crypto
import Foundation

/// NKey seeds and public keys (Ed25519 keys in NATS's base32 text form) and
/// `.creds` files, for authenticating with a server's nonce.
public struct NKeyPair: Sendable {
    /// The public key in text form (`U...` for users).
    public let publicKey: String
    private let privateKey: Curve25519.Signing.PrivateKey

    static let seedPrefix: UInt8 = 18 << 3  // 'S'
    static let userPrefix: UInt8 = 20 << 3  // 'U'

    /// A key pair from a seed such as `SUAM...`.
    public init(seed: String) throws {
        guard let raw = Base32.decode(seed.trimmingCharacters(in: .whitespacesAndNewlines)), raw.count == 36 else {
            throw NATSError.invalidCredentials(
                path: "seed", reason: "not an NKey seed (expected 58 base32 characters starting with S)")
        }
        let body = Array(raw.prefix(34))
        let checksum = UInt16(raw[34]) | UInt16(raw[35]) << 8
        guard CRC16.xmodem(body) == checksum else {
            throw NATSError.invalidCredentials(path: "seed", reason: "the seed's checksum does not match (a typo?)")
        }
        guard body[0] & 0xF8 == Self.seedPrefix else {
            throw NATSError.invalidCredentials(path: "seed", reason: "not a seed (it does not start with S)")
        }
        let publicPrefix = (body[0] & 0x07) << 5 | (body[1] & 0xF8) >> 3
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: body[2..<34])
        privateKey = key
        publicKey = Self.encode(prefix: publicPrefix, key: Array(key.publicKey.rawRepresentation))
    }

    /// A new random user key pair (for tests and tools).
    public static func generateUser() -> (seed: String, pair: NKeyPair) {
        let key = Curve25519.Signing.PrivateKey()
        let seed = encodeSeed(publicPrefix: userPrefix, key: Array(key.rawRepresentation))
        return (seed, try! NKeyPair(seed: seed))
    }

    /// Signs `nonce`, returning base64url without padding, as CONNECT wants it.
    public func sign(_ nonce: String) throws -> String {
        let signature = try privateKey.signature(for: Data(nonce.utf8))
        return Data(signature).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func encode(prefix: UInt8, key: [UInt8]) -> String {
        var bytes = [prefix] + key
        let checksum = CRC16.xmodem(bytes)
        bytes += [UInt8(checksum & 0xFF), UInt8(checksum >> 8)]
        return Base32.encode(bytes)
    }

    static func encodeSeed(publicPrefix: UInt8, key: [UInt8]) -> String {
        var bytes = [seedPrefix | publicPrefix >> 5, (publicPrefix & 0x1F) << 3] + key
        let checksum = CRC16.xmodem(bytes)
        bytes += [UInt8(checksum & 0xFF), UInt8(checksum >> 8)]
        return Base32.encode(bytes)
    }
}

/// The user JWT and seed of a `.creds` file.
public struct NATSCredentials: Sendable {
    /// The user JWT.
    public var jwt: String
    /// The user's key pair.
    public var keyPair: NKeyPair

    /// Reads a `.creds` file.
    public init(file path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw NATSError.invalidCredentials(path: path, reason: "cannot read the file")
        }
        try self.init(text: text, path: path)
    }

    init(text: String, path: String) throws {
        func block(_ marker: String) -> String? {
            let lines = text.components(separatedBy: .newlines)
            guard let start = lines.firstIndex(where: { $0.contains("BEGIN \(marker)") }) else { return nil }
            return lines[(start + 1)...].first { !$0.trimmingCharacters(in: .whitespaces).isEmpty }?
                .trimmingCharacters(in: .whitespaces)
        }
        guard let jwt = block("NATS USER JWT") else {
            throw NATSError.invalidCredentials(path: path, reason: "no '-----BEGIN NATS USER JWT-----' block")
        }
        guard let seed = block("USER NKEY SEED") else {
            throw NATSError.invalidCredentials(path: path, reason: "no '-----BEGIN USER NKEY SEED-----' block")
        }
        self.jwt = jwt
        do {
            self.keyPair = try NKeyPair(seed: seed)
        } catch NATSError.invalidCredentials(_, let reason) {
            throw NATSError.invalidCredentials(path: path, reason: reason)
        }
    }
}

enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                output.append(alphabet[Int(buffer >> UInt32(bits - 5) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { output.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var output: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for character in text.utf8 {
            guard let value = alphabet.firstIndex(of: character) else { return nil }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                output.append(UInt8(buffer >> UInt32(bits - 8) & 0xFF))
                bits -= 8
            }
        }
        return output
    }
}

enum CRC16 {
    /// CRC-16/XMODEM (polynomial 0x1021, initial 0), as NKeys use it.
    static func xmodem(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? crc << 1 ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}
