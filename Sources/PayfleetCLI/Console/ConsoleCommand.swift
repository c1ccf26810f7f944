import ArgumentParser
import Foundation
import Hummingbird
import Logging
import PayfleetCore
import ServiceLifecycle

/// `payfleet console`: the operator's web console on loopback (see `ConsoleApp`), and
/// `payfleet console hash-password`, which makes the line for `console.password_file`.
public struct ConsoleCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "console", abstract: "The operator's web console: status, dead letters, trace, settlement.",
        subcommands: [Serve.self, HashPassword.self], defaultSubcommand: Serve.self)
    public init() {}

    public struct Serve: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "serve",
            abstract: "Serve the console (console.host:console.port, loopback by default) until SIGTERM or SIGINT.",
            discussion: """
                Needs console.password_file (a line from `payfleet console hash-password`) or console.token_file. \
                Prints `payfleet console listening on http://HOST:PORT` once it accepts connections.
                """)
        @OptionGroup public var global: GlobalOptions
        @Option(help: "Listen on this address instead of console.host.") public var host: String?
        @Option(help: "Listen on this port instead of console.port (0: a free port).") public var port: Int?
        public init() {}

        public func run() async throws {
            let root = try ConfigSection.load(file: global.configPath, environment: ProcessInfo.processInfo.environment)
            var c = try ConsoleConfiguration.read(root)
            if let host {
                guard c.allowRemote || ConsoleConfiguration.isLoopback(host) else {
                    throw CLIFailure("--host \(host): not a loopback address (set console.allow_remote: true behind a TLS proxy)")
                }
                c.host = host
            }
            if let port {
                guard (0...65535).contains(port) else { throw CLIFailure("--port must be 0…65535") }
                c.port = port
            }
            _ = try CLIContext.load(global)  // the fleet's config must load before anything is served
            let logger = Logger(label: "payfleet.console")
            let app = ConsoleApp(configPath: global.configPath, configuration: c)
            let shownHost = c.host.contains(":") ? "[\(c.host)]" : c.host
            let application = app.buildApplication(host: c.host, port: c.port, logger: logger) { port in
                FileHandle.standardOutput.write(Data("payfleet console listening on http://\(shownHost):\(port)\n".utf8))
            }
            var groupConfig = ServiceGroupConfiguration(
                services: [.init(service: application)], gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [], logger: logger)
            groupConfig.maximumGracefulShutdownDuration = .seconds(10)
            try await ServiceGroup(configuration: groupConfig).run()
        }
    }

    public struct HashPassword: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "hash-password",
            abstract: "Read a password on standard input; print the salted hash line for console.password_file.")
        @Option(help: .hidden) public var iterations = PasswordHash.defaultIterations
        public init() {}

        public func run() async throws {
            guard (1_000...10_000_000).contains(iterations) else { throw CLIFailure("--iterations must be 1000…10000000") }
            // On a terminal without echo; otherwise one line from the pipe.
            let typed: String? = isatty(STDIN_FILENO) == 1
                ? getpass("password: ").map { String(cString: $0) } : readLine(strippingNewline: true)
            guard let line = typed, !line.isEmpty else {
                throw CLIFailure("no password on standard input")
            }
            guard line.count >= 12 else { throw CLIFailure("use a password of at least 12 characters") }
            print(PasswordHash.make(line, iterations: iterations).line)
        }
    }
}
