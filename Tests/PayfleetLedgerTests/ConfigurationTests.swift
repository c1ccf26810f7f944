import Foundation
import PayfleetCLI
import PayfleetLedger
import PayfleetTestKit
import Testing

/// What the CLI and the executable read from `config/payfleet.yaml`.
@Suite struct ConfigurationTests {
    func write(_ yaml: String) throws -> (dir: String, path: String) {
        let dir = TestEnvironment.makeTempDir("ledger-config")
        let path = dir + "/payfleet.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return (dir, path)
    }

    @Test("The CLI reads one file per partition: <state_dir>/<name>.pN.sqlite, or <name>.sqlite unpartitioned")
    func stateFiles() throws {
        let (dir, path) = try write("state_dir: /srv/payfleet\nledger-writer:\n  partitions: 3\n  name: books\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = GlobalOptions()
        options.config = path
        #expect(
            LedgerBook.stateFiles(try CLIContext.load(options)) == [
                "/srv/payfleet/books.p0.sqlite", "/srv/payfleet/books.p1.sqlite", "/srv/payfleet/books.p2.sqlite",
            ])
        let (dir2, path2) = try write("state_dir: /srv/payfleet\n")
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        options.config = path2
        #expect(LedgerBook.stateFiles(try CLIContext.load(options)) == ["/srv/payfleet/ledger-writer.sqlite"])
        #expect(throws: LedgerBookError.self) { try LedgerBook(files: ["/nonexistent/ledger-writer.sqlite"]) }
    }

    @Test("ledger-writer --check-config: the shipped config is accepted; an unknown key exits 78 naming it")
    func checkConfig() async throws {
        let binary = TestEnvironment.binDir + "/ledger-writer"
        let good = try AccountingTools.run(
            binary, ["--config", TestEnvironment.repoRoot + "/config/payfleet.yaml", "--check-config"])
        #expect(good.0 == 0, "\(good.1)")
        let (dir, path) = try write(
            "ledger-writer:\n  accounts:\n    sales: \"Income:{merchant}:Revenue\"\n    bnak: \"Assets:{merchant}:Bank\"\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = try AccountingTools.run(binary, ["--config", path, "--check-config"])
        #expect(bad.0 == 78)
        #expect(bad.1.contains("ledger-writer.accounts.bnak: unknown key"), "\(bad.1)")
    }
}
