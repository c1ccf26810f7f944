extension ConfigSection {
    /// `state_dir` when the file does not set it: the sandbox's directory, relative to the
    /// working directory (what `payfleet dev` and `config/payfleet.yaml` use).
    public static let defaultStateDir = ".payfleet/dev/state"

    /// `state_dir` of this section, else `ConfigSection.defaultStateDir`.
    public func stateDir() throws(ConfigError) -> String {
        try string("state_dir", default: Self.defaultStateDir)
    }
}
