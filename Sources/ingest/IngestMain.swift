import Foundation
import PayfleetIngest

@main
struct IngestExecutable {
    static func main() async {
        exit(await IngestMain.run())
    }
}
