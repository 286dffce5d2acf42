//! `strata check FILE`: parse and elaborate, report every diagnostic; nothing is compiled.

use super::{Common, load_source, options, report};
use std::process::ExitCode;
use strata_compiler::driver::check;

pub(super) fn run(c: &Common) -> ExitCode {
    let source = match load_source(&c.file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = match options(c) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match check(&source, &opts.elaborate) {
        Ok(e) => {
            let params: u64 = e
                .graph
                .params()
                .iter()
                .map(|(v, _)| e.graph.ty(*v).shape.fixed_elements())
                .sum();
            println!(
                "{}: model `{}` is well-formed ({} ops, {} parameters)",
                source.name,
                e.graph.name,
                e.graph.len(),
                params
            );
            ExitCode::SUCCESS
        }
        Err(d) => {
            report(&d, &source, c.error_format);
            ExitCode::FAILURE
        }
    }
}
