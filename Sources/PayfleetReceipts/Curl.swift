import CCurl
import Foundation
import PayfleetCore

/// One libcurl easy transfer (SMTP or HTTP). Everything here blocks: callers run it on a
/// `BlockingThread`, never on Swift's cooperative pool.
final class CurlTransfer {
    /// What a finished transfer reports: libcurl's result, the last protocol response code
    /// (SMTP reply code or HTTP status), the server's reply lines and the response body.
    struct Result: Sendable {
        var code: CURLcode
        var responseCode: Int
        /// Lines the server sent (SMTP replies, HTTP status line and headers); never what we sent.
        var serverLines: [String]
        var body: [UInt8]
        var errorText: String

        var ok: Bool { code == CURLE_OK }
        var curlCodeName: String { String(cString: curl_easy_strerror(code)) }
    }

    /// The per-transfer state the C callbacks reach through their user-data pointer.
    final class Context {
        var upload: [UInt8]
        var offset = 0
        var body: [UInt8] = []
        var serverLines: [String] = []
        init(upload: [UInt8]) { self.upload = upload }
    }

    static let globalInit: Void = { _ = curl_global_init(3) }()  // CURL_GLOBAL_ALL

    let handle: UnsafeMutableRawPointer
    let context: Context
    private var lists: [UnsafeMutablePointer<curl_slist>] = []
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: 257)  // CURL_ERROR_SIZE + 1

    init(upload: [UInt8] = []) {
        _ = Self.globalInit
        handle = curl_easy_init()!
        context = Context(upload: upload)
        let ud = Unmanaged.passUnretained(context).toOpaque()
        set(CURLOPT_NOSIGNAL, 1)
        set(CURLOPT_VERBOSE, 1)  // only so the debug callback sees the server's replies
        payfleet_curl_setopt_debug(handle, curlDebug)
        payfleet_curl_setopt_pointer(handle, CURLOPT_DEBUGDATA, ud)
        payfleet_curl_setopt_read(handle, curlRead)
        payfleet_curl_setopt_pointer(handle, CURLOPT_READDATA, ud)
        payfleet_curl_setopt_write(handle, curlWrite)
        payfleet_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, ud)
        errorBuffer.initialize(repeating: 0, count: 257)
        payfleet_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, UnsafeMutableRawPointer(errorBuffer))
    }

    deinit {
        curl_easy_cleanup(handle)
        for l in lists { curl_slist_free_all(l) }
        errorBuffer.deallocate()
    }

    func set(_ option: CURLoption, _ value: Int) { payfleet_curl_setopt_long(handle, option, value) }
    /// libcurl copies string options (since 7.17), so the Swift string need not outlive the call.
    func set(_ option: CURLoption, _ value: String) { payfleet_curl_setopt_string(handle, option, value) }
    func set(_ option: CURLoption, list: [String]) {
        var l: UnsafeMutablePointer<curl_slist>?
        for s in list { l = curl_slist_append(l, s) }
        if let l { lists.append(l) }
        payfleet_curl_setopt_slist(handle, option, l)
    }

    func perform() -> Result {
        let code = curl_easy_perform(handle)
        var rc = 0
        _ = payfleet_curl_response_code(handle, &rc)
        let text = String(cString: errorBuffer)
        return Result(
            code: code, responseCode: rc, serverLines: context.serverLines, body: context.body,
            errorText: text.isEmpty ? String(cString: curl_easy_strerror(code)) : text)
    }
}

private func curlRead(_ buf: UnsafeMutablePointer<CChar>?, _ size: Int, _ n: Int, _ ud: UnsafeMutableRawPointer?) -> Int
{
    guard let buf, let ud else { return 0 }
    let ctx = Unmanaged<CurlTransfer.Context>.fromOpaque(ud).takeUnretainedValue()
    let count = min(size * n, ctx.upload.count - ctx.offset)
    guard count > 0 else { return 0 }
    ctx.upload.withUnsafeBytes { src in
        UnsafeMutableRawPointer(buf).copyMemory(from: src.baseAddress! + ctx.offset, byteCount: count)
    }
    ctx.offset += count
    return count
}

private func curlWrite(_ buf: UnsafeMutablePointer<CChar>?, _ size: Int, _ n: Int, _ ud: UnsafeMutableRawPointer?)
    -> Int
{
    guard let buf, let ud else { return 0 }
    let ctx = Unmanaged<CurlTransfer.Context>.fromOpaque(ud).takeUnretainedValue()
    let count = size * n
    // Bounded: an error page is only ever quoted, never needed whole.
    if ctx.body.count < 65_536 {
        ctx.body.append(contentsOf: UnsafeRawBufferPointer(start: buf, count: count))
    }
    return count
}

private func curlDebug(
    _ h: UnsafeMutableRawPointer?, _ type: curl_infotype, _ data: UnsafeMutablePointer<CChar>?, _ size: Int,
    _ ud: UnsafeMutableRawPointer?
) -> Int32 {
    // Only what the server sent: our own lines may carry AUTH credentials.
    guard type == CURLINFO_HEADER_IN, let data, let ud else { return 0 }
    let ctx = Unmanaged<CurlTransfer.Context>.fromOpaque(ud).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    if !line.isEmpty {
        ctx.serverLines.append(String(line.prefix(512)))
        if ctx.serverLines.count > 64 { ctx.serverLines.removeFirst() }
    }
    return 0
}
