import PayfleetCLI

@main
struct PayfleetMain {
    static func main() async {
        await PayfleetCommand.main()
    }
}
