fn main() -> std::process::ExitCode {
    strata_compiler::cli::main()
}
