//! The runtime stub that `strata build` appends a compiled model to. It holds the
//! runtime only: no parser, no compiler.
fn main() -> std::process::ExitCode {
    strata_runtime::stub::main()
}
