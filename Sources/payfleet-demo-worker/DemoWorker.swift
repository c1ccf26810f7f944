import Foundation
import PayfleetCore
import PayfleetWorker

/// The runtime's demonstration worker: consumes every event type into a SQLite table.
@main
struct DemoWorker {
    static func main() async {
        let code = await WorkerMain.run(.demoWorker) { _, _, _, _ in DemoHandler() }
        exit(code)
    }
}
