import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A child process with pipes to its stdin, stdout and stderr, in a process
/// group of its own (so a kill reaches what a shell wrapper started too).
final class ChildProcess: Sendable {
    let pid: pid_t
    /// Our end of the child's stdin.
    let input: Int32
    /// Our end of the child's stdout.
    let output: Int32
    /// Our end of the child's stderr.
    let errors: Int32
    private let inputClosed = Atomic<Bool>(false)

    private init(pid: pid_t, input: Int32, output: Int32, errors: Int32) {
        self.pid = pid
        self.input = input
        self.output = output
        self.errors = errors
    }

    /// The executable `name` names: itself when it has a `/`, else the first
    /// executable file of that name on `PATH`.
    static func resolve(_ name: String, path: String?) throws -> String {
        if name.contains("/") {
            guard access(name, X_OK) == 0 else {
                throw DescribedFailure(
                    description:
                        "'\(name)' is not an executable file (\(String(cString: strerror(errno)))); fix the path or its permissions (chmod +x)"
                )
            }
            return name
        }
        let directories = (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        for directory in directories where access(directory + "/" + name, X_OK) == 0 {
            return directory + "/" + name
        }
        throw DescribedFailure(
            description:
                "command '\(name)' was not found on PATH (\(directories.joined(separator: ":"))); install it or give its full path"
        )
    }

    /// Starts `command` (the executable and its arguments) with `environment`
    /// added to ours, in `directory` (ours when nil).
    static func spawn(_ command: [String], environment: [String: String], directory: String?) throws -> ChildProcess {
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        let executable = try resolve(command[0], path: merged["PATH"])
        if let directory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else {
                throw DescribedFailure(description: "working_directory '\(directory)' is not a directory")
            }
        }
        var stdinPipe: [Int32] = [-1, -1]
        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        guard pipe(&stdinPipe) == 0, pipe(&stdoutPipe) == 0, pipe(&stderrPipe) == 0 else {
            let code = errno
            for fd in stdinPipe + stdoutPipe + stderrPipe where fd >= 0 { close(fd) }
            throw SystemCallError(call: "pipe", target: command[0], code: code)
        }
        // Our ends must not leak into other children (close-on-exec); the
        // child's ends are dup'ed onto 0, 1 and 2, which stay open.
        for fd in stdinPipe + stdoutPipe + stderrPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group; default signal handling (we ignore SIGPIPE).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))

        // posix_spawn has no portable chdir: a shell changes directory, then
        // execs the command (same process, same pid).
        let argv =
            directory.map { ["/bin/sh", "-c", "cd -- \"$0\" && exec \"$@\"", $0, executable] + command.dropFirst() }
            ?? [executable] + command.dropFirst()
        let arguments = argv.map { strdup($0) } + [nil]
        let environmentStrings = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in arguments + environmentStrings { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, arguments, environmentStrings)
        close(stdinPipe[0])
        close(stdoutPipe[1])
        close(stderrPipe[1])
        guard result == 0 else {
            close(stdinPipe[1])
            close(stdoutPipe[0])
            close(stderrPipe[0])
            throw SystemCallError(call: "posix_spawn", target: executable, code: result)
        }
        return ChildProcess(pid: pid, input: stdinPipe[1], output: stdoutPipe[0], errors: stderrPipe[0])
    }

    /// Writes all of `bytes` to the child's stdin (blocking: call it on the
    /// blocking pool). Returns false once the child closed its stdin.
    ///
    /// A write to a child that exited raises SIGPIPE, whose default action
    /// ends the process; an app embedding LogPipe need not ignore it, so the
    /// signal is blocked on this thread for the write and a pending one is
    /// taken back before it is unblocked.
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1, sigismember(&previous, SIGPIPE) == 0 {
                var zero = timespec()
                _ = sigtimedwait(&pipeSignal, nil, &zero)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(input, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }

    /// Appends to `buffer` what one of the child's pipes (`output`,
    /// `errors`) holds, up to `maximum` bytes, waiting for some (blocking);
    /// nil at the pipe's end.
    static func read(_ fd: Int32, appendingTo buffer: ByteBuffer, upTo maximum: Int) -> ByteBuffer? {
        var buffer = buffer
        while true {
            var result = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: maximum) { raw in
                result = Glibc.read(fd, raw.baseAddress, min(raw.count, maximum))
                return max(0, result)
            }
            if result > 0 { return buffer }
            if result < 0, errno == EINTR { continue }
            return nil  // end of file, or the pipe broke
        }
    }

    /// Ends the child's stdin (it sees end of file).
    func closeInput() {
        if !inputClosed.exchange(true, ordering: .acquiringAndReleasing) { close(input) }
    }

    /// Kills the child's whole process group at once.
    func kill() {
        _ = Glibc.kill(-pid, SIGKILL)
    }

    /// Waits for the child to exit (blocking) and describes how it did.
    func waitForExit() -> String {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return "exited (waitpid: \(String(cString: strerror(errno))))" }
        }
        let signal = status & 0x7f
        if signal == 0 { return "exited with status \((status >> 8) & 0xff)" }
        return "was killed by signal \(signal)"
    }

    deinit {
        closeInput()
        close(output)
        close(errors)
    }
}
