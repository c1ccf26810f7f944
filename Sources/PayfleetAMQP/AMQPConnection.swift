import CRabbitMQ
import Foundation
import PayfleetCore

/// One rabbitmq-c connection with one channel (channel 1). Not thread-safe: each instance is
/// owned by exactly one thread (a publisher's or a consumer's) for its whole life.
final class AMQPConnection {
    let state: amqp_connection_state_t
    let config: AMQPConfiguration
    static let channel: amqp_channel_t = 1
    private(set) var isOpen = false
    /// The C state still needs `amqp_destroy_connection` (also after the broker closed the
    /// channel or connection, which clears `isOpen` but frees nothing).
    private var needsDestroy = false

    /// The endpoint index that last answered, per cluster (the joined endpoint list).
    private static let preferred = Locked<[String: Int]>([:])

    /// Connects to the first node of `config.endpoints` that answers, starting with the one that
    /// answered last and going round the list once (a refused port fails at once, an unreachable
    /// node after `connectTimeoutSeconds`). The caller's reconnect backoff applies after a full round.
    static func open(_ config: AMQPConfiguration) throws(AMQPError) -> AMQPConnection {
        let nodes = config.endpoints
        guard nodes.count > 1 else { return try AMQPConnection(config) }
        let key = nodes.map(\.description).joined(separator: ",")
        let start = preferred.withLock { $0[key] ?? 0 }
        var failures: [String] = []
        for k in 0..<nodes.count {
            let i = (start + k) % nodes.count
            var c = config
            c.host = nodes[i].host
            c.port = nodes[i].port
            do {
                let conn = try AMQPConnection(c)
                preferred.withLock { $0[key] = i }
                return conn
            } catch {
                failures.append("\(nodes[i]): \(error.message)")
            }
        }
        throw AMQPError(.connectionFailed, "no broker node answered (\(failures.joined(separator: "; ")))")
    }

    init(_ config: AMQPConfiguration) throws(AMQPError) {
        self.config = config
        guard let state = amqp_new_connection() else {
            throw AMQPError(.connectionFailed, "cannot allocate a connection to \(config)")
        }
        self.state = state
        let socket: OpaquePointer?
        if config.tls {
            socket = amqp_ssl_socket_new(state)
            if let socket {
                amqp_ssl_socket_set_verify_peer(socket, config.verifyPeer ? 1 : 0)
                amqp_ssl_socket_set_verify_hostname(socket, config.verifyPeer ? 1 : 0)
                if let ca = config.caFile, amqp_ssl_socket_set_cacert(socket, ca) != AMQP_STATUS_OK.rawValue {
                    amqp_destroy_connection(state)
                    throw AMQPError(.invalidConfiguration, "cannot load CA file '\(ca)'")
                }
                if let cert = config.certFile, let key = config.keyFile,
                    amqp_ssl_socket_set_key(socket, cert, key) != AMQP_STATUS_OK.rawValue
                {
                    amqp_destroy_connection(state)
                    throw AMQPError(.invalidConfiguration, "cannot load client certificate '\(cert)' / key '\(key)'")
                }
            }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else {
            amqp_destroy_connection(state)
            throw AMQPError(.connectionFailed, "cannot create a socket for \(config)")
        }
        var tv = timeval(tv_sec: config.connectTimeoutSeconds, tv_usec: 0)
        let rc = amqp_socket_open_noblock(socket, config.host, Int32(config.port), &tv)
        if rc != AMQP_STATUS_OK.rawValue {
            amqp_destroy_connection(state)
            throw AMQPError(.connectionFailed, "cannot connect to \(config.host):\(config.port): \(Self.statusString(rc))")
        }
        let reply = payfleet_amqp_login(
            state, config.vhost, 0, 131_072, Int32(config.heartbeatSeconds), config.user, config.password)
        if reply.reply_type != AMQP_RESPONSE_NORMAL {
            let err = Self.error(reply, .connectionFailed, "login to \(config)")
            amqp_destroy_connection(state)
            throw err
        }
        amqp_channel_open(state, Self.channel)
        let r2 = amqp_get_rpc_reply(state)
        if r2.reply_type != AMQP_RESPONSE_NORMAL {
            let err = Self.error(r2, .connectionFailed, "channel.open on \(config)")
            amqp_destroy_connection(state)
            throw err
        }
        isOpen = true
        needsDestroy = true
    }

    deinit { close() }

    func close() {
        if isOpen {
            isOpen = false
            // Best effort: the peer may be gone already.
            amqp_connection_close(state, AMQP_REPLY_SUCCESS)
        }
        destroy()
    }

    /// Drops the connection without the close handshake (after an error).
    func abandon() {
        isOpen = false
        destroy()
    }

    private func destroy() {
        guard needsDestroy else { return }
        needsDestroy = false
        amqp_destroy_connection(state)
    }

    static func statusString(_ rc: Int32) -> String {
        String(cString: amqp_error_string2(rc))
    }

    static func error(_ reply: amqp_rpc_reply_t, _ code: AMQPError.Code, _ what: String) -> AMQPError {
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD, let d = reply.reply.decoded {
                let m = d.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                return AMQPError(.serverClosed, "\(what): broker closed the connection: \(m.reply_text.swiftString)",
                                 replyCode: Int(m.reply_code))
            }
            if reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD, let d = reply.reply.decoded {
                let m = d.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                return AMQPError(.serverClosed, "\(what): broker closed the channel: \(m.reply_text.swiftString)",
                                 replyCode: Int(m.reply_code))
            }
            return AMQPError(.serverClosed, "\(what): broker exception (method \(reply.reply.id))")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let rc = reply.library_error
            let c: AMQPError.Code =
                (rc == AMQP_STATUS_CONNECTION_CLOSED.rawValue || rc == AMQP_STATUS_SOCKET_ERROR.rawValue
                    || rc == AMQP_STATUS_HEARTBEAT_TIMEOUT.rawValue || rc == AMQP_STATUS_SOCKET_CLOSED.rawValue)
                ? .connectionLost : code
            return AMQPError(c, "\(what): \(statusString(rc))")
        case AMQP_RESPONSE_NONE:
            return AMQPError(code, "\(what): no reply")
        default:
            return AMQPError(code, "\(what): unexpected reply")
        }
    }

    private func check(_ what: String, _ code: AMQPError.Code = .declarationFailed) throws(AMQPError) {
        let r = amqp_get_rpc_reply(state)
        if r.reply_type != AMQP_RESPONSE_NORMAL {
            isOpen = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? isOpen : false
            throw Self.error(r, code, what)
        }
    }

    // MARK: Declarations

    func declareExchange(
        _ name: String, type: String, arguments: [String: AMQPFieldValue] = [:], passive: Bool = false
    ) throws(AMQPError) {
        let arena = CArena()
        amqp_exchange_declare(
            state, Self.channel, arena.bytes(name), arena.bytes(type), passive ? 1 : 0, 1, 0, 0, arena.table(arguments))
        try check("exchange.declare \(name) (\(type)) on \(config.host):\(config.port)")
    }

    /// Declares a durable queue; returns (messages, consumers).
    @discardableResult
    func declareQueue(
        _ name: String, arguments: [String: AMQPFieldValue] = [:], passive: Bool = false, exclusive: Bool = false
    ) throws(AMQPError) -> (messages: Int, consumers: Int) {
        let arena = CArena()
        // An exclusive queue lives and dies with this connection: not durable, auto-deleted.
        let ok = amqp_queue_declare(
            state, Self.channel, arena.bytes(name), passive ? 1 : 0, exclusive ? 0 : 1, exclusive ? 1 : 0,
            exclusive ? 1 : 0, arena.table(arguments))
        try check("queue.declare \(name) on \(config.host):\(config.port)")
        guard let ok else { return (0, 0) }
        return (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
    }

    func bindQueue(_ queue: String, exchange: String, routingKey: String) throws(AMQPError) {
        let arena = CArena()
        amqp_queue_bind(
            state, Self.channel, arena.bytes(queue), arena.bytes(exchange), arena.bytes(routingKey), amqp_empty_table)
        try check("queue.bind \(queue) to \(exchange) with '\(routingKey)'")
    }

    func bindExchange(destination: String, source: String, routingKey: String) throws(AMQPError) {
        let arena = CArena()
        amqp_exchange_bind(
            state, Self.channel, arena.bytes(destination), arena.bytes(source), arena.bytes(routingKey),
            amqp_empty_table)
        try check("exchange.bind \(destination) to \(source) with '\(routingKey)'")
    }

    func purgeQueue(_ queue: String) throws(AMQPError) -> Int {
        let arena = CArena()
        let ok = amqp_queue_purge(state, Self.channel, arena.bytes(queue))
        try check("queue.purge \(queue)")
        return Int(ok?.pointee.message_count ?? 0)
    }

    func deleteQueue(_ queue: String) throws(AMQPError) {
        let arena = CArena()
        amqp_queue_delete(state, Self.channel, arena.bytes(queue), 0, 0)
        try check("queue.delete \(queue)")
    }

    func deleteExchange(_ exchange: String) throws(AMQPError) {
        let arena = CArena()
        amqp_exchange_delete(state, Self.channel, arena.bytes(exchange), 0)
        try check("exchange.delete \(exchange)")
    }

    // MARK: Publishing

    func confirmSelect() throws(AMQPError) {
        amqp_confirm_select(state, Self.channel)
        try check("confirm.select", .connectionFailed)
    }

    func publish(_ out: AMQPOutgoing) throws(AMQPError) {
        let arena = CArena()
        var props = amqp_basic_properties_t()
        var flags: UInt32 = UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        props.delivery_mode = out.message.persistent ? 2 : 1
        let m = out.message
        if let v = m.contentType { flags |= UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG); props.content_type = arena.bytes(v) }
        if let v = m.messageID { flags |= UInt32(AMQP_BASIC_MESSAGE_ID_FLAG); props.message_id = arena.bytes(v) }
        if let v = m.type { flags |= UInt32(AMQP_BASIC_TYPE_FLAG); props.type = arena.bytes(v) }
        if let v = m.correlationID {
            flags |= UInt32(AMQP_BASIC_CORRELATION_ID_FLAG); props.correlation_id = arena.bytes(v)
        }
        if let v = m.appID { flags |= UInt32(AMQP_BASIC_APP_ID_FLAG); props.app_id = arena.bytes(v) }
        if let v = m.timestamp { flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG); props.timestamp = v }
        if !m.headers.isEmpty { flags |= UInt32(AMQP_BASIC_HEADERS_FLAG); props.headers = arena.table(m.headers) }
        props._flags = flags
        let rc = amqp_basic_publish(
            state, Self.channel, arena.bytes(out.exchange), arena.bytes(out.routingKey), out.mandatory ? 1 : 0, 0,
            &props, arena.bytes(m.body))
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "publish to '\(out.exchange)' '\(out.routingKey)': \(Self.statusString(rc))")
        }
    }

    // MARK: Frames

    enum Frame {
        case ack(tag: UInt64, multiple: Bool)
        case nack(tag: UInt64, multiple: Bool)
        case returned(AMQPMessage, replyCode: Int, replyText: String, exchange: String, routingKey: String)
        case cancelled
        case cancelOK
        case other
        case timeout
    }

    /// Waits up to `timeoutMS` for one method frame; closes and errors are thrown.
    func waitFrame(timeoutMS: Int) throws(AMQPError) -> Frame {
        var frame = amqp_frame_t()
        var tv = timeval(tv_sec: timeoutMS / 1000, tv_usec: Int((timeoutMS % 1000) * 1000))
        let rc = amqp_simple_wait_frame_noblock(state, &frame, &tv)
        if rc == AMQP_STATUS_TIMEOUT.rawValue { return .timeout }
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "connection to \(config.host):\(config.port): \(Self.statusString(rc))")
        }
        return try interpret(frame)
    }

    func interpret(_ frame: amqp_frame_t) throws(AMQPError) -> Frame {
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return .other }
        let method = frame.payload.method
        switch method.id {
        case AMQP_BASIC_ACK_METHOD:
            let a = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            return .ack(tag: a.delivery_tag, multiple: a.multiple != 0)
        case AMQP_BASIC_NACK_METHOD:
            let a = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            return .nack(tag: a.delivery_tag, multiple: a.multiple != 0)
        case AMQP_BASIC_RETURN_METHOD:
            let r = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let code = Int(r.reply_code)
            let text = r.reply_text.swiftString
            let ex = r.exchange.swiftString
            let rk = r.routing_key.swiftString
            var msg = amqp_message_t()
            let reply = amqp_read_message(state, frame.channel, &msg, 0)
            guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
                isOpen = false
                throw Self.error(reply, .connectionLost, "reading a returned message")
            }
            defer { amqp_destroy_message(&msg) }
            return .returned(Self.message(msg), replyCode: code, replyText: text, exchange: ex, routingKey: rk)
        case AMQP_BASIC_CANCEL_METHOD:
            return .cancelled
        case AMQP_BASIC_CANCEL_OK_METHOD:
            return .cancelOK
        case AMQP_CHANNEL_CLOSE_METHOD:
            let m = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            isOpen = false
            throw AMQPError(.serverClosed, "broker closed the channel: \(m.reply_text.swiftString)",
                            replyCode: Int(m.reply_code))
        case AMQP_CONNECTION_CLOSE_METHOD:
            let m = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            isOpen = false
            throw AMQPError(.serverClosed, "broker closed the connection: \(m.reply_text.swiftString)",
                            replyCode: Int(m.reply_code))
        default:
            return .other
        }
    }

    static func message(_ m: amqp_message_t) -> AMQPMessage {
        let p = m.properties
        let f = p._flags
        func has(_ flag: Int32) -> Bool { f & UInt32(flag) != 0 }
        return AMQPMessage(
            body: m.body.swiftBytes,
            messageID: has(AMQP_BASIC_MESSAGE_ID_FLAG) ? p.message_id.swiftString : nil,
            contentType: has(AMQP_BASIC_CONTENT_TYPE_FLAG) ? p.content_type.swiftString : nil,
            headers: has(AMQP_BASIC_HEADERS_FLAG) ? AMQPDecode.table(p.headers) : [:],
            persistent: has(AMQP_BASIC_DELIVERY_MODE_FLAG) && p.delivery_mode == 2,
            timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG) ? p.timestamp : nil,
            type: has(AMQP_BASIC_TYPE_FLAG) ? p.type.swiftString : nil,
            correlationID: has(AMQP_BASIC_CORRELATION_ID_FLAG) ? p.correlation_id.swiftString : nil,
            appID: has(AMQP_BASIC_APP_ID_FLAG) ? p.app_id.swiftString : nil)
    }

    // MARK: Consuming

    func qos(prefetch: Int) throws(AMQPError) {
        amqp_basic_qos(state, Self.channel, 0, UInt16(clamping: prefetch), 0)
        try check("basic.qos", .connectionFailed)
    }

    func consume(queue: String, tag: String) throws(AMQPError) {
        let arena = CArena()
        amqp_basic_consume(state, Self.channel, arena.bytes(queue), arena.bytes(tag), 0, 0, 0, amqp_empty_table)
        try check("basic.consume on \(queue)", .declarationFailed)
    }

    func cancel(tag: String) throws(AMQPError) {
        let arena = CArena()
        var m = amqp_basic_cancel_t(consumer_tag: arena.bytes(tag), nowait: 0)
        let rc = amqp_send_method(state, Self.channel, AMQP_BASIC_CANCEL_METHOD, &m)
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "basic.cancel: \(Self.statusString(rc))")
        }
    }

    func ack(_ tag: UInt64, multiple: Bool) throws(AMQPError) {
        let rc = amqp_basic_ack(state, Self.channel, tag, multiple ? 1 : 0)
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "basic.ack: \(Self.statusString(rc))")
        }
    }

    func nack(_ tag: UInt64, requeue: Bool) throws(AMQPError) {
        let rc = amqp_basic_nack(state, Self.channel, tag, 0, requeue ? 1 : 0)
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "basic.nack: \(Self.statusString(rc))")
        }
    }

    enum ConsumeResult {
        case delivery(AMQPMessage, tag: UInt64, redelivered: Bool, exchange: String, routingKey: String)
        case frame(Frame)
        case timeout
    }

    /// Reads the next delivery (or another frame) within `timeoutMS` (0 = only what is buffered).
    ///
    /// Not `amqp_consume_message`: with a short timeout it can read a basic.deliver method
    /// frame, time out before the content frames arrive, and drop the delivery — which a later
    /// multiple-ack would then acknowledge unseen. Here the method frame is read without
    /// blocking, and once one is in, its content is read to the end (it follows at once).
    func consumeNext(timeoutMS: Int) throws(AMQPError) -> ConsumeResult {
        amqp_maybe_release_buffers(state)
        var frame = amqp_frame_t()
        var tv = timeval(tv_sec: timeoutMS / 1000, tv_usec: Int((timeoutMS % 1000) * 1000))
        let rc = amqp_simple_wait_frame_noblock(state, &frame, &tv)
        if rc == AMQP_STATUS_TIMEOUT.rawValue { return .timeout }
        if rc != AMQP_STATUS_OK.rawValue {
            isOpen = false
            throw AMQPError(.connectionLost, "connection to \(config.host):\(config.port): \(Self.statusString(rc))")
        }
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD), frame.payload.method.id == AMQP_BASIC_DELIVER_METHOD else {
            return .frame(try interpret(frame))
        }
        let d = frame.payload.method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
        let tag = d.delivery_tag
        let redelivered = d.redelivered != 0
        let exchange = d.exchange.swiftString
        let routingKey = d.routing_key.swiftString
        var msg = amqp_message_t()
        let reply = amqp_read_message(state, frame.channel, &msg, 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            isOpen = false
            throw Self.error(reply, .connectionLost, "reading delivery \(tag) from \(config.host):\(config.port)")
        }
        defer { amqp_destroy_message(&msg) }
        return .delivery(Self.message(msg), tag: tag, redelivered: redelivered, exchange: exchange, routingKey: routingKey)
    }

    /// Fetches one message with basic.get (no auto-ack); nil when the queue is empty.
    func get(queue: String) throws(AMQPError) -> (AMQPMessage, tag: UInt64, redelivered: Bool, remaining: Int)? {
        let arena = CArena()
        let reply = amqp_basic_get(state, Self.channel, arena.bytes(queue), 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            isOpen = false
            throw Self.error(reply, .declarationFailed, "basic.get on \(queue)")
        }
        if reply.reply.id == AMQP_BASIC_GET_EMPTY_METHOD { return nil }
        let ok = reply.reply.decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
        var msg = amqp_message_t()
        let r2 = amqp_read_message(state, Self.channel, &msg, 0)
        guard r2.reply_type == AMQP_RESPONSE_NORMAL else {
            isOpen = false
            throw Self.error(r2, .connectionLost, "reading a message from \(queue)")
        }
        defer { amqp_destroy_message(&msg) }
        return (Self.message(msg), ok.delivery_tag, ok.redelivered != 0, Int(ok.message_count))
    }

    var socketFD: Int32 { amqp_get_sockfd(state) }
    var hasBufferedData: Bool { amqp_data_in_buffer(state) != 0 || amqp_frames_enqueued(state) != 0 }
}
