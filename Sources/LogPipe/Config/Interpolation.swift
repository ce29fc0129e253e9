/// `${VAR}` and `${VAR:-default}` substitution in pipeline-file values.
public enum Interpolation {
    /// What went wrong while interpolating.
    public struct Failure: Error, CustomStringConvertible {
        /// What is wrong.
        public var message: String
        /// How to fix it.
        public var hint: String

        public var description: String { message }
    }

    /// Replaces `${NAME}` with the variable's value and `${NAME:-default}`
    /// with the value, or `default` when the variable is unset or empty.
    /// `$$` stands for a literal `$`. Any other `$` is kept as it is.
    ///
    /// - Throws: ``Failure`` for an unset variable without default, an
    ///   unterminated `${`, or an invalid variable name.
    public static func apply(_ text: String, environment: [String: String]) throws -> String {
        guard text.contains("$") else { return text }
        var result = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            guard character == "$" else {
                result.append(character)
                index = text.index(after: index)
                continue
            }
            let next = text.index(after: index)
            if next < text.endIndex, text[next] == "$" {
                result.append("$")
                index = text.index(after: next)
                continue
            }
            guard next < text.endIndex, text[next] == "{" else {
                result.append("$")
                index = next
                continue
            }
            guard let close = text[next...].firstIndex(of: "}") else {
                throw Failure(
                    message: "'${' without a closing '}'",
                    hint: "write ${NAME} or ${NAME:-default}; use $$ for a literal $")
            }
            let body = text[text.index(after: next)..<close]
            let name: Substring
            let fallback: Substring?
            if let separator = body.range(of: ":-") {
                name = body[..<separator.lowerBound]
                fallback = body[separator.upperBound...]
            } else {
                name = body
                fallback = nil
            }
            guard isValidName(name) else {
                throw Failure(
                    message: "'${\(body)}' is not a valid variable reference",
                    hint: "names use letters, digits and '_' and do not start with a digit; use $$ for a literal $"
                )
            }
            let value = environment[String(name)]
            if let value, !(value.isEmpty && fallback != nil) {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                throw Failure(
                    message: "environment variable '\(name)' is not set",
                    hint: "set \(name), or give a default: ${\(name):-value}"
                )
            }
            index = text.index(after: close)
        }
        return result
    }

    private static func isValidName(_ name: Substring) -> Bool {
        guard let first = name.first, first == "_" || (first.isASCII && first.isLetter) else { return false }
        return name.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
    }
}
