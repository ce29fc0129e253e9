import LogPipeBase
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What `exec` does with records a child failed on `max_attempts` times.
public enum ExecFailurePolicy: String, Sendable, CaseIterable {
    /// Stop the pipeline with an error naming the record (nothing is lost:
    /// what was not acknowledged is read again at the next start).
    case fail
    /// Drop the records, acknowledged as dropped and counted as `failed_records`.
    case drop
}

/// Runs a long-lived child process and sends each record through it: the
/// `lines` protocol writes one line per record to its stdin and reads
/// exactly one answer line per record from its stdout, in order; the answer
/// replaces the line, an empty answer drops the record.
///
/// The child is a plugin in any language. At most `max_in_flight` records
/// wait for answers (backpressure both ways); a record is released
/// downstream only with its answer, so its acknowledgement waits for the
/// sinks. When the child exits, closes its stdout or gives no answer for
/// `timeout`, it is killed, restarted with backoff, and the records without
/// an answer are sent again (counted as `restarts` and `resent_records`).
public struct ExecTransform: Transform {
    /// The options as a pipeline file gives them.
    public struct Settings: StageSettings {
        /// The executable and its arguments.
        public var command: [String] = []
        /// `NAME=value` entries added to the child's environment.
        public var env: [String] = []
        /// The child's working directory (default: logpipe's).
        public var workingDirectory: String? = nil
        /// Records sent and not answered yet, at most.
        public var maxInFlight = 10_000
        /// Longest wait for the next answer while records are in flight.
        public var timeout: Duration = .seconds(30)
        /// Children a record may go through before `on_failure` applies.
        public var maxAttempts = 3
        /// What to do with records the child failed on `max_attempts` times.
        public var onFailure: ExecFailurePolicy = .fail

        public init() {}
    }

    static let definition = StageDefinition.transform(
        "exec",
        summary:
            "Sends each line through a long-lived child process (any language): one line in, one answer line out; an empty answer drops the record.",
        options: [
            StageOption<Settings>.stringList(
                "command", \.command, required: true,
                "The executable and its arguments, e.g. `[python3, -u, redact.py]`; found on PATH unless it has a `/`."
            ),
            .stringList("env", \.env, "Environment entries `NAME=value` added to logpipe's for the child."),
            .string("working_directory", \.workingDirectory, "The child's working directory (default: logpipe's)."),
            .integer(
                "max_in_flight", \.maxInFlight, in: 1...1_000_000,
                "Records written to the child and not answered yet, at most (then upstream waits)."),
            .duration(
                "timeout", \.timeout, positive: true,
                "Longest wait for the next answer while records are in flight; then the child is killed and restarted."
            ),
            .integer(
                "max_attempts", \.maxAttempts, in: 1...100,
                "Children a record may go through (crashes, time-outs) before `on_failure` applies to it."),
            .choice(
                "on_failure", \.onFailure,
                "Records that failed `max_attempts` times: `fail` the pipeline (nothing is lost) or `drop` them (counted as `failed_records`)."
            ),
        ]
    ) { settings, options in
        guard let executable = settings.command.first, !executable.isEmpty else {
            throw options.error("command", "is empty", hint: "command: [my-filter, --flag]")
        }
        var environment: [String: String] = [:]
        for entry in settings.env {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else {
                throw options.error("env", "entry '\(entry)' is not NAME=value", hint: "env: [\"LANG=C.UTF-8\"]")
            }
            environment[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        return ExecTransform(settings: settings, environment: environment)
    }

    public var producedFields: Set<String> { [] }
    let settings: Settings
    let environment: [String: String]

    public func run(input: BatchInput, output: BatchOutput, context: StageContext) async throws {
        let exchange = ExecExchange(settings: settings, environment: environment, context: context)
        try await exchange.run(input: input, output: output)
    }
}

/// One `exec` stage's traffic with its child (and the children that
/// replace it): the records in flight, in the order they were written.
final class ExecExchange: Sendable {
    private struct Pending {
        var batch: Batch
        /// One answer per record answered so far (its first `answers.count`).
        var answers: [ByteBuffer] = []
        /// Children its first unanswered record was written to (an answer
        /// starts the count again for the next one).
        var attempts = 1
    }

    private struct State {
        /// An array (not a CircularBuffer): answers are appended in place.
        var pending: [Pending] = []
        var unanswered = 0
        /// The first entry with records not answered.
        var firstOpen = 0
        var child: ChildProcess?
        var inputEnded = false
        /// Since when the oldest unanswered record waits without an answer coming.
        var waitingSince: ContinuousClock.Instant = .now
    }

    private let settings: ExecTransform.Settings
    private let environment: [String: String]
    private let context: StageContext
    private let state = Mutex(State())
    private let gate = AsyncGate()
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation

    init(settings: ExecTransform.Settings, environment: [String: String], context: StageContext) {
        self.settings = settings
        self.environment = environment
        self.context = context
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    private var commandName: String { settings.command.joined(separator: " ") }

    func run(input: BatchInput, output: BatchOutput) async throws {
        // A child that cannot start is a clear error at once, not a retry loop.
        let first = try spawn()
        state.withLock { $0.child = first }
        defer { state.withLock { $0.child }?.kill() }
        try await withTaskCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Each loop that blocks (writes to the child, waits for it to
                // exit, reads its output) has a thread of its own: a plugin
                // that is slow or hung must not hold the blocking pool that
                // every file source and sink shares.
                group.addTask {
                    try await DedicatedThread.run { try await self.supervise(first: first, output: output) }
                }
                group.addTask {
                    try await DedicatedThread.run { try await self.feed(input) }
                    // Every record answered: the child may go.
                    self.state.withLock { $0.child }?.kill()
                }
                group.addTask { try await self.watchdog() }
                // The feeder and the supervisor end; the watchdog never does.
                for _ in 0..<2 { try await group.next() }
                group.cancelAll()
            }
        } onCancel: {
            // A blocked read or write ends once the child is gone.
            state.withLock { $0.child }?.kill()
        }
    }

    /// Writes each input batch to the current child, waiting while
    /// `max_in_flight` records are unanswered; then waits for the answers.
    private func feed(_ input: BatchInput) async throws {
        var wakes = wake.makeAsyncIterator()
        for await var batch in input {
            Self.flattenNewlines(&batch, metrics: context.metrics)
            while state.withLock({ $0.unanswered > 0 && $0.unanswered + batch.count > settings.maxInFlight }) {
                _ = await wakes.next()
                try Task.checkCancellation()
            }
            let payload = Self.payload(batch.records[...])
            await gate.lock()
            let child: ChildProcess? = state.withLock { state in
                if state.unanswered == 0 { state.waitingSince = .now }
                state.pending.append(Pending(batch: batch))
                state.unanswered += batch.count
                return state.child
            }
            // A failed write means the child died: the supervisor sends the
            // batch again to the next one.
            if let child { _ = await Self.send(payload, to: child) }
            await gate.unlock()
        }
        await gate.lock()
        state.withLock { state in
            state.inputEnded = true
            return state.child
        }?.closeInput()
        await gate.unlock()
        while state.withLock({ !$0.pending.isEmpty }) {
            _ = await wakes.next()
            try Task.checkCancellation()
        }
    }

    /// Reads the current child's answers until its stdout ends; then, while
    /// records remain, starts the next child and writes them to it again.
    private func supervise(first: ChildProcess, output: BatchOutput) async throws {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        var child = first
        /// What a restarted child is sent first (the gate is held until then).
        var resend: [ByteBuffer]? = nil
        while true {
            let current = child
            let errors = Task { _ = try? await DedicatedThread.run { await self.logErrors(of: current) } }
            // Reading starts before the records are sent again: a child
            // answering a long resend must find its stdout read.
            let reader = Task {
                try await DedicatedThread.run { try await self.readAnswers(from: current, output: output) }
            }
            if let payloads = resend {
                for payload in payloads {
                    if !(await Self.send(payload, to: current)) { break }
                }
                if state.withLock({ $0.inputEnded }) { current.closeInput() }
                await gate.unlock()
            }
            let answered = try await withTaskCancellationHandler {
                try await reader.value
            } onCancel: {
                current.kill()
            }
            current.kill()
            let exit = try await BlockingIO.runEvenIfCancelled { current.waitForExit() }  // reap it, even when cancelled
            errors.cancel()
            wakeContinuation.yield()
            let remaining = state.withLock { state -> Int? in
                state.inputEnded && state.pending.isEmpty ? nil : state.unanswered
            }
            guard let remaining else { return }
            context.logger.warning(
                "child '\(commandName)' \(exit); restarting it and sending its \(remaining) unanswered record(s) again")
            if answered { backoff.reset() }
            try await backoff.sleep()
            let (next, payloads) = try await restart(output: output)
            (child, resend) = (next, payloads)
        }
    }

    /// Starts a child and collects every unanswered record to write it
    /// again, applying `on_failure` to a record that reached `max_attempts`.
    /// Returns with the gate held: the caller writes, then unlocks.
    private func restart(output: BatchOutput) async throws -> (ChildProcess, [ByteBuffer]) {
        await gate.lock()
        do {
            let given = try await settleExhausted(output: output)
            let child = try spawn()
            context.metrics.count("restarts")
            var resent = 0
            let payloads: [ByteBuffer] = state.withLock { state in
                state.child = child
                state.waitingSince = .now
                // The oldest open entry is what the dead child worked on.
                if let head = state.pending.indices.first { state.pending[head].attempts += 1 }
                var payloads: [ByteBuffer] = []
                for index in state.pending.indices {
                    let from = state.pending[index].answers.count
                    resent += state.pending[index].batch.count - from
                    payloads.append(Self.payload(state.pending[index].batch.records[from...]))
                }
                return payloads
            }
            context.metrics.count("resent_records", by: resent)
            if given > 0 { wakeContinuation.yield() }
            return (child, payloads)
        } catch {
            await gate.unlock()
            throw error
        }
    }

    /// Applies `on_failure` to the oldest unanswered record once it went
    /// through `max_attempts` children; returns how many records it dropped.
    private func settleExhausted(output: BatchOutput) async throws -> Int {
        let exhausted: (line: String, attempts: Int)? = state.withLock { state in
            guard let head = state.pending.first, head.attempts >= settings.maxAttempts else { return nil }
            return (String(head.batch.records[head.answers.count].text.prefix(200)), head.attempts)
        }
        guard let exhausted else { return 0 }
        switch settings.onFailure {
        case .fail:
            throw DescribedFailure(
                description:
                    "the child '\(commandName)' failed \(exhausted.attempts) times without answering the line '\(exhausted.line)'; fix the plugin, or set on_failure: drop"
            )
        case .drop:
            context.metrics.count("failed_records")
            context.logger.error(
                "the child '\(commandName)' failed \(exhausted.attempts) times without answering; dropping the line '\(exhausted.line)' (on_failure: drop)"
            )
            // An empty answer drops it; the next record starts a new count.
            let (done, _) = assign([ByteBuffer()])
            for var batch in done {
                batch.removeAll { $0.bytes.readableBytes == 0 }
                try await output.send(batch)
            }
            return 1
        }
    }

    /// Reads answer lines until the child's stdout ends; sends each entry
    /// downstream once all its records are answered. Returns whether any
    /// answer came.
    private func readAnswers(from child: ChildProcess, output: BatchOutput) async throws -> Bool {
        // An answer longer than 64 MiB is cut there: bounded, and still one answer.
        var splitter = LineSplitter(maxLineBytes: 64 << 20, oversize: .truncate, stripCarriageReturn: true)
        var answered = false
        while true {
            let empty = splitter.makeReadBuffer(capacity: 65536)
            let chunk = try await BlockingIO.run { ChildProcess.read(child.output, appendingTo: empty, upTo: 65536) }
            guard let chunk else { return answered }
            var lines: [ByteBuffer] = []
            splitter.consume(chunk) { line, _ in lines.append(line) }
            guard !lines.isEmpty else { continue }
            answered = true
            let (done, extra) = assign(lines)
            if extra > 0 {
                context.metrics.count("protocol_errors")
                throw DescribedFailure(
                    description:
                        "the child '\(commandName)' wrote \(extra) more line(s) than it was sent; the lines protocol needs exactly one answer line per line sent (an empty line drops the record)"
                )
            }
            for var batch in done {
                batch.removeAll { $0.bytes.readableBytes == 0 }
                try await output.send(batch)
            }
            wakeContinuation.yield()
        }
    }

    /// Gives each answer to the next unanswered record; returns the entries
    /// now complete (their lines replaced) and how many answers had no record.
    private func assign(_ lines: [ByteBuffer]) -> ([Batch], Int) {
        state.withLock { state in
            var extra = 0
            for line in lines {
                while state.firstOpen < state.pending.count,
                    state.pending[state.firstOpen].answers.count == state.pending[state.firstOpen].batch.count
                {
                    state.firstOpen += 1
                }
                guard state.firstOpen < state.pending.count else {
                    extra += 1
                    continue
                }
                let index = state.firstOpen
                state.pending[index].answers.append(line)
                state.pending[index].attempts = 1
                state.unanswered -= 1
            }
            state.waitingSince = .now
            var done: [Batch] = []
            let complete = state.pending.prefix { $0.answers.count == $0.batch.count }.count
            for entry in state.pending.prefix(complete) {
                var batch = entry.batch
                for (index, answer) in entry.answers.enumerated() { batch.records[index].bytes = answer }
                done.append(batch)
            }
            state.pending.removeFirst(complete)
            state.firstOpen = max(0, state.firstOpen - complete)
            return (done, extra)
        }
    }

    /// Kills the child when records wait longer than `timeout` for an answer.
    private func watchdog() async throws {
        let interval = max(settings.timeout / 4, .milliseconds(20))
        while true {
            try await Task.sleep(for: interval)
            let stuck: ChildProcess? = state.withLock { state in
                guard state.unanswered > 0, ContinuousClock.now - state.waitingSince > settings.timeout else {
                    return nil
                }
                state.waitingSince = .now
                return state.child
            }
            if let stuck {
                context.metrics.count("timeouts")
                context.logger.warning(
                    "the child '\(commandName)' gave no answer for \(Units.format(settings.timeout)); killing it")
                stuck.kill()
            }
        }
    }

    /// Logs the child's stderr lines as warnings naming the stage, at most
    /// 20 a second (the rest counted as `stderr_lines_suppressed`).
    private func logErrors(of child: ChildProcess) async {
        var splitter = LineSplitter(maxLineBytes: 16 << 10, oversize: .truncate, stripCarriageReturn: true)
        var windowStart = ContinuousClock.now
        var inWindow = 0
        while true {
            let empty = splitter.makeReadBuffer(capacity: 4096)
            let read = try? await BlockingIO.run { ChildProcess.read(child.errors, appendingTo: empty, upTo: 4096) }
            guard let chunk = read else { return }
            var lines: [String] = []
            splitter.consume(chunk) { line, _ in lines.append(String(buffer: line)) }
            for line in lines {
                if ContinuousClock.now - windowStart > .seconds(1) {
                    windowStart = .now
                    inWindow = 0
                }
                inWindow += 1
                if inWindow <= 20 {
                    context.logger.warning("child stderr: \(line)")
                } else {
                    context.metrics.count("stderr_lines_suppressed")
                }
            }
        }
    }

    private func spawn() throws -> ChildProcess {
        do {
            return try ChildProcess.spawn(
                settings.command, environment: environment, directory: settings.workingDirectory)
        } catch {
            throw DescribedFailure(description: "cannot start the child '\(commandName)': \(error)")
        }
    }

    /// Writes `payload` to the child's stdin; false once the child is gone.
    private static func send(_ payload: ByteBuffer, to child: ChildProcess) async -> Bool {
        (try? await BlockingIO.run { payload.withUnsafeReadableBytes { child.write($0) } }) ?? false
    }

    /// The records' lines, each ended by a newline.
    private static func payload(_ records: ArraySlice<Record>) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: records.reduce(0) { $0 + $1.bytes.readableBytes + 1 })
        for record in records {
            buffer.writeImmutableBuffer(record.bytes)
            buffer.writeInteger(UInt8(ascii: "\n"))
        }
        return buffer
    }

    /// A newline inside a record would break the one-line-per-record
    /// framing: it becomes a space (counted as `newlines_replaced`).
    private static func flattenNewlines(_ batch: inout Batch, metrics: StageMetrics) {
        var replaced = 0
        for index in batch.records.indices
        where batch.records[index].bytes.readableBytesView.contains(UInt8(ascii: "\n")) {
            var bytes = Array(batch.records[index].bytes.readableBytesView)
            for position in bytes.indices where bytes[position] == UInt8(ascii: "\n") {
                bytes[position] = UInt8(ascii: " ")
                replaced += 1
            }
            batch.records[index].bytes = ByteBuffer(bytes: bytes)
        }
        if replaced > 0 { metrics.count("newlines_replaced", by: replaced) }
    }
}

/// An asynchronous lock: `lock()` waits (without blocking a thread) until
/// the holder calls `unlock()`.
final class AsyncGate: Sendable {
    private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func lock() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state in
                if state.locked {
                    state.waiters.append(continuation)
                    return false
                }
                state.locked = true
                return true
            }
            if acquired { continuation.resume() }
        }
    }

    func unlock() async {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
