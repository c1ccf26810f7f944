import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PayfleetCore

/// A rejected request: HTTP status plus `{"error": {"code", "message"}}`; the message names the field.
public struct IngestError: Error, Sendable, Equatable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    static func invalid(_ field: String, _ message: String) -> IngestError {
        IngestError(.unprocessableContent, "invalid_event", "\(field): \(message)")
    }

    var response: Response {
        let body = ["error": ["code": code, "message": message]]
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
