/// Header names Payfleet puts on its messages: the event's schema, merchant, customer and
/// trace context on every published event; the worker, error, attempts and first failure on
/// retried and dead-lettered ones.
public enum PayfleetHeaders {
    public static let error = "x-payfleet-error"
    public static let attempts = "x-payfleet-attempts"
    public static let firstFailedAt = "x-payfleet-first-failed-at"
    public static let worker = "x-payfleet-worker"
    public static let schema = "x-payfleet-schema"
    public static let merchant = "x-payfleet-merchant"
    public static let customer = "x-payfleet-customer"
    public static let traceparent = "traceparent"
}
