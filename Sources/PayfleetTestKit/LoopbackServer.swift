import Hummingbird
import Logging

/// A Hummingbird server for tests on 127.0.0.1 and a port the kernel picks: the loopback
/// stand-ins (Stripe's API, a CRM, an OTLP receiver) start through here.
public enum LoopbackServer {
    /// Starts serving `router`; returns once the port is bound, with the task to cancel.
    public static func start(
        _ router: Router<BasicRequestContext>, label: String
    ) async -> (port: Int, task: Task<Void, any Error>) {
        let bound = AsyncStream<Int>.makeStream()
        var logger = Logger(label: label)
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { ch in
                bound.continuation.yield(ch.localAddress?.port ?? 0)
                bound.continuation.finish()
            }, logger: logger)
        let task = Task { try await app.runService() }
        var port = 0
        for await p in bound.stream { port = p }
        return (port, task)
    }
}
