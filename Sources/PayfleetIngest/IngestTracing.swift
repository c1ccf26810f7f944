import Hummingbird
import PayfleetTelemetry

/// With tracing on (`tracing.otlp_endpoint`): one server span per request, `POST <route>`,
/// continuing the request's `traceparent` when it is valid W3C (else a new trace). The outbox
/// row stores this span's `traceparent`, so the relay and every worker continue the trace.
/// Only the method, route and status are recorded (never headers, query or body).
struct IngestTracingMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // The caller's context only when valid W3C and free of a card number (it is stored).
        let incoming = request.headers[.traceparent].flatMap {
            IngestRoutes.isValidTraceparent($0) && !PANGuard.containsPAN($0) ? $0 : nil
        }
        let span = PayfleetTracing.start("\(request.method.rawValue) unknown route", kind: .server, parent: incoming)
        span.set("http.request.method", request.method.rawValue)
        do {
            let response = try await PayfleetTracing.withCurrent(span) { try await next(request, context) }
            if let route = context.endpointPath { span.name = "\(request.method.rawValue) \(route)" }
            if let route = context.endpointPath { span.set("http.route", route) }
            span.set("http.response.status_code", Int(response.status.code))
            span.end(error: response.status.code >= 500 ? "HTTP \(response.status.code)" : nil)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            span.set("http.response.status_code", Int(status))
            span.end(error: status >= 500 ? "HTTP \(status)" : nil)
            throw error
        }
    }
}
