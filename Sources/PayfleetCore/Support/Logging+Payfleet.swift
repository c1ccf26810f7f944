import Logging

/// Every logging metadata key Payfleet writes, in one place (as postgres-nio's
/// `Logging+PSQL.swift`): a key is spelled once, so a log query for it finds every line that
/// carries it, whichever module wrote it. Values never hold secrets or card data (DESIGN §8).
public enum LogKey {
    // MARK: Any module
    /// The error, as its description (never an event body).
    public static let error = "error"
    /// How long until the next attempt, in milliseconds.
    public static let retryInMS = "retry_in_ms"
    public static let configKey = "config.key"

    // MARK: The worker and the event
    public static let worker = "payfleet.worker"
    public static let partition = "payfleet.partition"
    public static let eventID = "payfleet.event.id"
    public static let eventType = "payfleet.event.type"
    public static let merchant = "payfleet.merchant"
    /// A failure's description on its way to a retry tier or the dead-letter queue.
    public static let failure = "payfleet.error"
    /// Deliveries of the event so far.
    public static let attempts = "payfleet.attempts"
    public static let adminPort = "admin.port"

    // MARK: The broker (PayfleetAMQP)
    public static let amqpHost = "amqp.host"
    public static let amqpQueue = "amqp.queue"
    public static let amqpError = "amqp.error"
    public static let amqpRetryInMS = "amqp.retry_in_ms"
    public static let amqpPrefetch = "amqp.prefetch"
    public static let amqpGeneration = "amqp.generation"

    // MARK: The state file (PayfleetStore)
    public static let storePath = "store.path"
    public static let storeError = "store.error"
    public static let storeMigrations = "store.migrations"
    public static let storePruned = "store.pruned"
    public static let storeAttempts = "store.attempts"

    // MARK: The outbox relay (ingest's outbox, settlement's day closes)
    /// Failed publishes of a refused row, this one included.
    public static let outboxAttempts = "outbox.attempts"
    /// Rows of the batch not confirmed.
    public static let outboxUnsent = "outbox.unsent"
    public static let pauseHolder = "outbox.pause.holder"
    public static let pauseReason = "outbox.pause.reason"

    // MARK: Ingest
    public static let ingestSource = "ingest.source"
    public static let ingestError = "ingest.error"
    public static let ingestDuplicate = "ingest.duplicate"
    /// The path of a field whose card number was masked (never the value).
    public static let ingestField = "ingest.field"
    public static let ingestPruned = "ingest.pruned"
    public static let httpPort = "http.port"
    public static let httpStatus = "http.status"
    public static let stripeBalanceTransaction = "stripe.balance_transaction"

    // MARK: Workers' own
    public static let settlementDay = "settlement.day"
    public static let settlementEvents = "settlement.events"
    public static let receiptChannel = "receipt.channel"
    public static let receiptAction = "receipt.action"
    public static let crmProfilesCleared = "crm.profiles_cleared"
}
