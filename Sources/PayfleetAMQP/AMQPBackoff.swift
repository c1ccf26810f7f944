/// Exponential backoff with full jitter: attempt n waits a random time in [0, min(cap, base·2ⁿ)].
public struct AMQPBackoff: Sendable {
    public var initialMS: Int
    public var maxMS: Int
    public init(initialMS: Int, maxMS: Int) {
        self.initialMS = initialMS
        self.maxMS = maxMS
    }
    public func delayMS(attempt: Int) -> Int {
        let exp = min(maxMS, initialMS << min(attempt, 20))
        return Int.random(in: (exp / 2)...max(exp / 2, exp))
    }
}
