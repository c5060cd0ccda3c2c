fn main() -> std::process::ExitCode {
    mgpass::cli::main()
}
