import Foundation

/// A Payfleet executable started by a test: its own environment, output captured to a file,
/// killed with any signal, and waited for.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    public let logPath: String

    public init(executable: String, arguments: [String], environment: [String: String] = [:], logPath: String) throws {
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let out = FileHandle(forWritingAtPath: logPath)!
        out.seekToEndOfFile()
        process.standardOutput = out
        process.standardError = out
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    public func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Waits for exit up to `timeout`; returns the exit status, or nil if still running.
    public func wait(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// SIGKILL and reap.
    public func killNow() async {
        if process.isRunning { signal(SIGKILL) }
        _ = await wait(timeout: .seconds(10))
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// How it ended when it ended by itself — a non-zero exit or a signal no test sends to stop
    /// it (SIGKILL, SIGTERM, SIGINT) — else nil: what a failed run should show before the log
    /// file is removed with the test's directory.
    public var unexpectedEnd: String? {
        if process.isRunning { return nil }
        let status = process.terminationStatus
        switch process.terminationReason {
        case .exit where status != 0: return "exited with status \(status)"
        case .uncaughtSignal where ![SIGKILL, SIGTERM, SIGINT].contains(status): return "died of signal \(status)"
        default: return nil
        }
    }
}

/// Polls `condition` until it holds or the timeout passes.
public func eventually(
    timeout: Duration, every: Duration = .milliseconds(100), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: every)
    }
    return try await condition()
}
