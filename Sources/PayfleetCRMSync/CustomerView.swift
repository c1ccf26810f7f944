import Foundation
import PayfleetCore
import PayfleetStore

/// What `GET /customers/{id}` answers: for an agent desktop or a CRM widget, one screen with the
/// balance per currency, the open invoices and the payment history, newest first. No card data
/// is kept, so none can be shown.
public enum CustomerView {
    static func orNull(_ v: Any?) -> Any { v ?? NSNull() }

    /// The JSON document for `customer`, or nil when crm-sync has never seen that customer.
    public static func json(_ db: SQLiteConnection, customer: String, historyLimit: Int = 200) throws -> Data? {
        let balances = try db.query(
            """
            SELECT merchant_id, currency, outstanding, paid, refunded, disputed, status, last_payment_id,
                last_payment_amount, last_payment_at, version, updated_at
            FROM crm_balances WHERE customer_id = ? ORDER BY merchant_id, currency
            """, [.text(customer)])
        let profile = try db.queryOne(
            "SELECT name, email, phone FROM crm_customers WHERE customer_id = ?", [.text(customer)])
        if balances.isEmpty && profile == nil { return nil }

        var doc: [String: Any] = ["customer_id": customer]
        doc["name"] = orNull(profile?.string(0))
        doc["email"] = orNull(profile?.string(1))
        doc["phone"] = orNull(profile?.string(2))

        var outstanding: [String: Int64] = [:]
        var rows: [[String: Any]] = []
        for b in balances {
            let currency = b.string(1) ?? ""
            outstanding[currency, default: 0] += b.int(2) ?? 0
            var o: [String: Any] = [
                "merchant_id": b.string(0) ?? "", "currency": currency, "outstanding": b.int(2) ?? 0,
                "paid": b.int(3) ?? 0, "refunded": b.int(4) ?? 0, "disputed": b.int(5) ?? 0,
                "status": b.string(6) ?? "", "version": b.int(10) ?? 0,
            ]
            if let cur = Currency(code: currency) {
                o["outstanding_formatted"] = Money(value: b.int(2) ?? 0, currency: cur).majorString
            }
            if let pid = b.int(8) {
                o["last_payment"] = [
                    "payment_id": orNull(b.string(7)), "amount": pid,
                    "at": orNull(CRMState.date(b.int(9)).map(RFC3339.format)),
                ] as [String: Any]
            } else {
                o["last_payment"] = NSNull()
            }
            rows.append(o)
        }
        doc["balances"] = rows
        // The figure an agent quotes: outstanding per currency over all merchants.
        doc["outstanding"] = outstanding.mapValues { NSNumber(value: $0) }

        // Open invoices: issued amount − payments naming it + refunds naming it, still > 0.
        let invoices = try db.query(
            """
            SELECT i.invoice_id, i.merchant_id, i.currency, i.amount, i.occurred_at,
              COALESCE((SELECT SUM(CASE WHEN e.type = 'payment.succeeded' THEN e.amount
                                        WHEN e.type = 'payment.refunded' THEN -e.amount ELSE 0 END)
                        FROM crm_events e WHERE e.merchant_id = i.merchant_id AND e.invoice_id = i.invoice_id
                          AND e.currency = i.currency AND e.customer_id = i.customer_id), 0) AS paid
            FROM crm_events i WHERE i.customer_id = ? AND i.type = 'invoice.issued'
            ORDER BY i.occurred_at DESC, i.event_id DESC
            """, [.text(customer)])
        doc["open_invoices"] = invoices.compactMap { r -> [String: Any]? in
            let amount = r.int(3) ?? 0
            let paid = r.int(5) ?? 0
            guard amount - paid > 0 else { return nil }
            return [
                "invoice_id": r.string(0) ?? "", "merchant_id": r.string(1) ?? "", "currency": r.string(2) ?? "",
                "amount": amount, "paid": paid, "due": amount - paid,
                "issued_at": orNull(CRMState.date(r.int(4)).map(RFC3339.format)),
            ]
        }

        let history = try db.query(
            """
            SELECT event_id, type, payment_id, merchant_id, currency, amount, fee, occurred_at, invoice_id, outcome,
                channel, method, reference
            FROM crm_events WHERE customer_id = ? AND type <> 'invoice.issued'
            ORDER BY occurred_at DESC, event_id DESC LIMIT ?
            """, [.text(customer), .int(Int64(historyLimit))])
        doc["payments"] = history.map { r -> [String: Any] in
            var o: [String: Any] = [
                "event_id": r.string(0) ?? "", "type": r.string(1) ?? "", "payment_id": orNull(r.string(2)),
                "merchant_id": r.string(3) ?? "", "currency": r.string(4) ?? "", "amount": r.int(5) ?? 0,
                "occurred_at": orNull(CRMState.date(r.int(7)).map(RFC3339.format)),
                "invoice_id": orNull(r.string(8)),
            ]
            if let fee = r.int(6) { o["fee"] = fee }
            if let outcome = r.string(9) { o["outcome"] = outcome }
            if let channel = r.string(10) { o["channel"] = channel }
            if let method = r.string(11) { o["method"] = method }
            if let reference = r.string(12) { o["reference"] = reference }
            return o
        }
        return try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
    }
}
