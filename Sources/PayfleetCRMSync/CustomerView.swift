import Foundation
import PayfleetCore
import PayfleetStore

/// What `GET /customers/{id}?merchant={merchant}` answers: for an agent desktop or a CRM
/// widget, one screen with one merchant's customer — the balance per currency, the open
/// invoices and the payment history, newest first. No card data is kept, so none can be shown.
///
/// Reversals show in the history: a cancelled refund or payment carries `"reversed": true`, a
/// `refund.failed` / `payment.reversed` carries `"matched"` (false while its original has not
/// arrived). Every sum is checked: a figure that would leave the 64-bit range is answered as
/// null with `"overflow": true`, never a crash.
public enum CustomerView {
    static func orNull(_ v: Any?) -> Any { v ?? NSNull() }

    /// The JSON document for `customer` of `merchant`, or nil when crm-sync has never seen that
    /// customer for that merchant.
    public static func json(
        _ db: SQLiteConnection, merchant: String, customer: String, historyLimit: Int = 200
    ) throws -> Data? {
        let key: [SQLValue] = [.text(customer), .text(merchant)]
        let balances = try db.query(
            """
            SELECT merchant_id, currency, outstanding, paid, refunded, disputed, status, last_payment_id,
                last_payment_amount, last_payment_at, version, updated_at
            FROM crm_balances WHERE customer_id = ? AND merchant_id = ? ORDER BY currency
            """, key)
        let profile = try db.queryOne(
            "SELECT name, email, phone FROM crm_customers WHERE customer_id = ? AND merchant_id = ?", key)
        if balances.isEmpty && profile == nil { return nil }

        var doc: [String: Any] = ["customer_id": customer, "merchant_id": merchant]
        doc["name"] = orNull(profile?.string(0))
        doc["email"] = orNull(profile?.string(1))
        doc["phone"] = orNull(profile?.string(2))

        var outstanding: [String: Any] = [:]
        var rows: [[String: Any]] = []
        for b in balances {
            let currency = b.string(1) ?? ""
            let value = b.int(2) ?? 0
            // One row per merchant, customer and currency: nothing to add up.
            outstanding[currency] = NSNumber(value: value)
            var o: [String: Any] = [
                "merchant_id": b.string(0) ?? "", "currency": currency, "outstanding": NSNumber(value: value),
                "paid": NSNumber(value: b.int(3) ?? 0), "refunded": NSNumber(value: b.int(4) ?? 0),
                "disputed": NSNumber(value: b.int(5) ?? 0), "status": b.string(6) ?? "",
                "version": NSNumber(value: b.int(10) ?? 0),
            ]
            if let cur = Currency(code: currency) {
                o["outstanding_formatted"] = Money(value: value, currency: cur).majorString
            }
            if let amount = b.int(8) {
                o["last_payment"] =
                    [
                        "payment_id": orNull(b.string(7)), "amount": NSNumber(value: amount),
                        "at": orNull(CRMState.date(b.int(9)).map(RFC3339.format)),
                    ] as [String: Any]
            } else {
                o["last_payment"] = NSNull()
            }
            rows.append(o)
        }
        doc["balances"] = rows
        doc["outstanding"] = outstanding

        // Open invoices: issued amount − payments naming it + refunds naming it (reversed ones
        // not counted), still > 0.
        let invoices = try db.query(
            """
            SELECT i.invoice_id, i.currency, i.amount, i.occurred_at FROM crm_events i
            WHERE i.customer_id = ? AND i.merchant_id = ? AND i.type = 'invoice.issued'
            ORDER BY i.occurred_at DESC, i.event_id DESC
            """, key)
        var open: [[String: Any]] = []
        for inv in invoices {
            guard let invoice = inv.string(0), let currency = inv.string(1), let amount = inv.int(2) else { continue }
            let items = try db.query(
                """
                SELECT e.type, e.amount, \(CRMState.cancelledSQL) FROM crm_events e
                WHERE e.merchant_id = ? AND e.invoice_id = ? AND e.currency = ? AND e.customer_id = ?
                  AND e.type IN ('payment.succeeded', 'payment.refunded')
                """, [.text(merchant), .text(invoice), .text(currency), .text(customer)])
            var paid: Int64? = 0
            for it in items where (it.int(2) ?? 0) == 0 {
                guard let p = paid, let a = it.int(1) else { continue }
                let (r, o) =
                    it.string(0) == "payment.succeeded"
                    ? p.addingReportingOverflow(a) : p.subtractingReportingOverflow(a)
                paid = o ? nil : r
            }
            var o: [String: Any] = [
                "invoice_id": invoice, "merchant_id": merchant, "currency": currency, "amount": NSNumber(value: amount),
                "issued_at": orNull(CRMState.date(inv.int(3)).map(RFC3339.format)),
            ]
            if let paid {
                let (due, over) = amount.subtractingReportingOverflow(paid)
                if over {
                    o["paid"] = NSNumber(value: paid)
                    o["due"] = NSNull()
                    o["overflow"] = true
                } else {
                    guard due > 0 else { continue }
                    o["paid"] = NSNumber(value: paid)
                    o["due"] = NSNumber(value: due)
                }
            } else {
                o["paid"] = NSNull()
                o["due"] = NSNull()
                o["overflow"] = true
            }
            open.append(o)
        }
        doc["open_invoices"] = open

        let history = try db.query(
            """
            SELECT e.event_id, e.type, e.payment_id, e.merchant_id, e.currency, e.amount, e.fee, e.occurred_at,
                e.invoice_id, e.outcome, e.channel, e.method, e.reference, e.refund_id, \(CRMState.cancelledSQL),
                \(CRMState.matchedSQL)
            FROM crm_events e WHERE e.customer_id = ? AND e.merchant_id = ? AND e.type <> 'invoice.issued'
            ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT ?
            """, key + [.int(Int64(historyLimit))])
        doc["payments"] = history.map { r -> [String: Any] in
            var o: [String: Any] = [
                "event_id": r.string(0) ?? "", "type": r.string(1) ?? "", "payment_id": orNull(r.string(2)),
                "merchant_id": r.string(3) ?? "", "currency": r.string(4) ?? "",
                "amount": NSNumber(value: r.int(5) ?? 0),
                "occurred_at": orNull(CRMState.date(r.int(7)).map(RFC3339.format)),
                "invoice_id": orNull(r.string(8)),
            ]
            if let fee = r.int(6) { o["fee"] = NSNumber(value: fee) }
            if let outcome = r.string(9) { o["outcome"] = outcome }
            if let channel = r.string(10) { o["channel"] = channel }
            if let method = r.string(11) { o["method"] = method }
            if let reference = r.string(12) { o["reference"] = reference }
            if let refund = r.string(13) { o["refund_id"] = refund }
            if (r.int(14) ?? 0) != 0 { o["reversed"] = true }
            if let matched = r.int(15) { o["matched"] = matched != 0 }
            return o
        }
        return try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
    }
}
