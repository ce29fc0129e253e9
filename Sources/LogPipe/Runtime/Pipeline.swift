/// A stage instance of any kind.
public enum AnyStage: Sendable {
    case source(any Source)
    case transform(any Transform)
    case sink(any Sink)

    /// The stage's role.
    public var kind: StageKind {
        switch self {
        case .source: .source
        case .transform: .transform
        case .sink: .sink
        }
    }
}

/// Settings that apply to the whole pipeline.
public struct PipelineSettings: Sendable {
    /// Directory for state that must survive restarts (checkpoints).
    public var dataDirectory: String
    /// How long a graceful shutdown waits for in-flight records to be
    /// acknowledged before giving up.
    public var shutdownTimeout: Duration
    /// How many batches each stage's input holds before senders wait.
    public var edgeCapacity: Int
    /// Where `logpipe run` serves `/metrics`, `/health` and `/ready`
    /// (`host:port`, the pipeline file's `api.address`); nil: no endpoint.
    public var apiAddress: String?
    /// `/ready` answers 503 while a source's oldest unacknowledged record
    /// is older than this (a stuck or far too slow sink); the pipeline
    /// file's `api.max_unacknowledged_age`.
    public var maxUnacknowledgedAge: Duration = .seconds(60)

    /// Creates settings; the defaults match the pipeline file's.
    public init(
        dataDirectory: String = "/var/lib/logpipe",
        shutdownTimeout: Duration = .seconds(30),
        edgeCapacity: Int = 2,
        apiAddress: String? = nil
    ) {
        self.dataDirectory = dataDirectory
        self.shutdownTimeout = shutdownTimeout
        self.edgeCapacity = edgeCapacity
        self.apiAddress = apiAddress
    }
}

/// A graph of named stages: what `logpipe run` runs, and what an app builds in code.
///
/// ```swift
/// var pipeline = Pipeline()
/// try pipeline.add("app", source: AsyncSequenceSource(lines: myLines))
/// try pipeline.add("errors", transform: MyFilter(), inputs: ["app"])
/// try pipeline.add("out", sink: StdoutSink(), inputs: ["errors"])
/// let summary = try await PipelineRunner(pipeline: pipeline).run()
/// ```
public struct Pipeline: Sendable {
    /// One stage of the graph.
    public struct Node: Sendable {
        /// The stage's unique name.
        public var name: String
        /// The stage instance.
        public var stage: AnyStage
        /// The names of the stages it receives from (empty for sources).
        public var inputs: [String]
        /// The registered type name, when built from a pipeline file.
        public var typeName: String?
        /// The stage's configuration as comparable text (its type and
        /// options, not its inputs), when built from a pipeline file. A
        /// reload keeps a stage running when its type name and this are
        /// unchanged; `nil` counts as changed (the stage is swapped).
        public var configuration: String?

        /// Creates a node.
        public init(
            name: String, stage: AnyStage, inputs: [String], typeName: String? = nil, configuration: String? = nil
        ) {
            self.name = name
            self.stage = stage
            self.inputs = inputs
            self.typeName = typeName
            self.configuration = configuration
        }
    }

    /// Pipeline-wide settings.
    public var settings: PipelineSettings
    /// The stages in the order they were added.
    public private(set) var nodes: [Node] = []

    /// Creates an empty pipeline.
    public init(settings: PipelineSettings = PipelineSettings()) {
        self.settings = settings
    }

    /// Adds a source named `name`.
    public mutating func add(_ name: String, source: any Source) throws {
        try add(Node(name: name, stage: .source(source), inputs: []))
    }

    /// Adds a transform named `name` that receives from `inputs`.
    public mutating func add(_ name: String, transform: any Transform, inputs: [String]) throws {
        try add(Node(name: name, stage: .transform(transform), inputs: inputs))
    }

    /// Adds a sink named `name` that receives from `inputs`.
    public mutating func add(_ name: String, sink: any Sink, inputs: [String]) throws {
        try add(Node(name: name, stage: .sink(sink), inputs: inputs))
    }

    /// Adds a node; its inputs may name stages added later.
    public mutating func add(_ node: Node) throws {
        if nodes.contains(where: { $0.name == node.name }) {
            throw PipelineError.invalidGraph(["a stage named '\(node.name)' already exists; stage names must be unique"]
            )
        }
        nodes.append(node)
    }

    /// The stage named `name`.
    public func node(named name: String) -> Node? {
        nodes.first { $0.name == name }
    }

    /// The names of the stages that receive from `name`.
    public func consumers(of name: String) -> [String] {
        nodes.filter { $0.inputs.contains(name) }.map(\.name)
    }

    /// Checks the graph: inputs exist and are not sinks, sources have no
    /// inputs, other stages have some, and there is no cycle.
    ///
    /// - Throws: ``PipelineError/invalidGraph(_:)`` listing every problem.
    public func validate() throws {
        let problems = GraphCheck(nodes: nodes.map { .init(name: $0.name, kind: $0.stage.kind, inputs: $0.inputs) })
            .problems()
            .filter { !$0.isWarning }
            .map(\.message)
        if !problems.isEmpty { throw PipelineError.invalidGraph(problems) }
    }
}

/// Errors from building or running a pipeline.
public enum PipelineError: Error, CustomStringConvertible {
    /// The graph is not runnable; each string is one problem.
    case invalidGraph([String])
    /// A stage failed; the pipeline stopped.
    case stageFailed(stage: String, underlying: any Error)
    /// ``PipelineRunner/run()`` was called a second time; make a new runner.
    case alreadyStarted
    /// A stage's state directory under `data_dir` cannot be used: not
    /// writable, or locked by another process. Nothing was started.
    case stateUnavailable(stage: String, reason: String)
    /// A graceful stop gave up waiting after `shutdown_timeout` with
    /// records unacknowledged (they are read again where the source can
    /// replay). Thrown by ``PipelineService``; ``PipelineRunner/run()``
    /// reports it in ``RunSummary/timedOut``.
    case shutdownTimedOut(unacknowledged: Int)

    public var description: String {
        switch self {
        case .invalidGraph(let problems):
            return "invalid pipeline:\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
        case .stageFailed(let stage, let underlying):
            return "stage '\(stage)' failed: \(underlying)"
        case .alreadyStarted:
            return "this PipelineRunner has already run; create a new one for another run"
        case .stateUnavailable(_, let reason):
            return reason
        case .shutdownTimedOut(let unacknowledged):
            return
                "the shutdown deadline passed with \(unacknowledged) record(s) unacknowledged; they will be read again where the source can replay (raise shutdown_timeout or fix the stuck sink)"
        }
    }
}

/// Graph rules shared by the pipeline-file validator and ``Pipeline/validate()``.
struct GraphCheck {
    struct NodeInfo {
        var name: String
        var kind: StageKind
        var inputs: [String]
    }

    struct Problem {
        enum Subject: Equatable {
            case stage(String)
            case input(stage: String, index: Int)
        }
        var subject: Subject
        var message: String
        var hint: String?
        var isWarning = false
    }

    var nodes: [NodeInfo]

    func problems() -> [Problem] {
        var problems: [Problem] = []
        let byName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        if !nodes.contains(where: { $0.kind == .source }) {
            problems.append(
                Problem(
                    subject: .stage(""), message: "the pipeline has no source", hint: "add a stage under 'sources:'"))
        }
        if !nodes.contains(where: { $0.kind == .sink }) {
            problems.append(
                Problem(subject: .stage(""), message: "the pipeline has no sink", hint: "add a stage under 'sinks:'"))
        }
        for node in nodes {
            if node.kind == .source, !node.inputs.isEmpty {
                problems.append(
                    Problem(
                        subject: .stage(node.name),
                        message: "source '\(node.name)' cannot have inputs",
                        hint: "sources produce records; remove 'inputs' or make it a transform"
                    )
                )
                continue
            }
            if node.kind != .source, node.inputs.isEmpty {
                problems.append(
                    Problem(
                        subject: .stage(node.name),
                        message: "\(node.kind) '\(node.name)' has no inputs",
                        hint: "add 'inputs: [<stage>]' naming the stages it receives from"
                    )
                )
            }
            var seen: Set<String> = []
            for (index, input) in node.inputs.enumerated() {
                if !seen.insert(input).inserted {
                    problems.append(
                        Problem(
                            subject: .input(stage: node.name, index: index),
                            message: "'\(node.name)' lists input '\(input)' twice",
                            hint: "name each input once"
                        )
                    )
                    continue
                }
                guard let upstream = byName[input] else {
                    // Only sources and transforms can feed a stage.
                    let candidates = nodes.filter { $0.kind != .sink && $0.name != node.name }.map(\.name)
                    problems.append(
                        Problem(
                            subject: .input(stage: node.name, index: index),
                            message: "'\(node.name)' has input '\(input)', but no stage has that name",
                            hint: closestMatch(to: input, among: candidates).map { "did you mean '\($0)'?" }
                                ?? (candidates.isEmpty
                                    ? "no source or transform is defined yet"
                                    : "stages that can be inputs: \(candidates.sorted().joined(separator: ", "))")
                        )
                    )
                    continue
                }
                if upstream.kind == .sink {
                    problems.append(
                        Problem(
                            subject: .input(stage: node.name, index: index),
                            message: "'\(node.name)' has input '\(input)', which is a sink",
                            hint: "sinks have no output; use the sink's own inputs instead"
                        )
                    )
                }
                if input == node.name {
                    problems.append(
                        Problem(
                            subject: .input(stage: node.name, index: index),
                            message: "'\(node.name)' lists itself as an input",
                            hint: "remove '\(input)' from its inputs"
                        )
                    )
                }
            }
        }
        problems.append(contentsOf: cycleProblems(byName: byName))
        for node in nodes where node.kind != .sink {
            if !nodes.contains(where: { $0.inputs.contains(node.name) }) {
                problems.append(
                    Problem(
                        subject: .stage(node.name),
                        message: "the output of \(node.kind) '\(node.name)' goes nowhere",
                        hint: "name it in the 'inputs' of a transform or sink, or remove it",
                        isWarning: true
                    )
                )
            }
        }
        return problems
    }

    private func cycleProblems(byName: [String: NodeInfo]) -> [Problem] {
        // Depth-first search; a back edge closes a cycle, which is reported
        // once, at the stage where the search entered it.
        enum Mark { case visiting, done }
        var marks: [String: Mark] = [:]
        var problems: [Problem] = []
        var reported: Set<String> = []

        func visit(_ name: String, path: [String]) {
            guard let node = byName[name] else { return }
            marks[name] = .visiting
            for input in node.inputs where input != name {
                switch marks[input] {
                case .visiting:
                    if let start = path.firstIndex(of: input) {
                        let cycle = Array(path[start...]) + [name]
                        let key = cycle.sorted().joined(separator: ",")
                        if reported.insert(key).inserted {
                            let shown = (cycle + [cycle[0]]).joined(separator: " <- ")
                            problems.append(
                                Problem(
                                    subject: .stage(name),
                                    message: "the stages form a cycle: \(shown)",
                                    hint: "records must flow from sources to sinks; remove one of these inputs"
                                )
                            )
                        }
                    }
                case .done: break
                case nil: visit(input, path: path + [name])
                }
            }
            marks[name] = .done
        }
        for node in nodes where marks[node.name] == nil {
            visit(node.name, path: [])
        }
        return problems
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo.
func closestMatch(to word: String, among candidates: [String]) -> String? {
    var best: (String, Int)?
    for candidate in candidates {
        let distance = editDistance(word.lowercased(), candidate.lowercased())
        if distance <= max(2, word.count / 3), distance < (best?.1 ?? Int.max) {
            best = (candidate, distance)
        }
    }
    return best?.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8)
    let b = Array(b.utf8)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = Array(repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
