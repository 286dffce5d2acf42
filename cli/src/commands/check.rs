//! `strata check FILE`: parse and elaborate every model of the file with its train
//! section, report every mistake (the first [`MAX_SHOWN_ERRORS`], then how many more);
//! nothing is compiled.

use super::{Common, ErrorFormat, load_source, options, report};
use std::process::ExitCode;
use strata_compiler::driver::{MAX_SHOWN_ERRORS, check};

pub(super) fn run(c: &Common) -> ExitCode {
    let source = match load_source(&c.file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = match options(c) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match check(&source, &opts.elaborate, &opts.train_overrides) {
        Ok(models) => {
            for m in models {
                let section = if m.trained {
                    " with its train section"
                } else {
                    ""
                };
                println!(
                    "{}: model `{}`{section} is well-formed ({} ops, {} parameters)",
                    source.name, m.name, m.ops, m.parameters
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for d in errors.iter().take(MAX_SHOWN_ERRORS) {
                report(d, &source, c.error_format);
            }
            let more = errors.len().saturating_sub(MAX_SHOWN_ERRORS);
            match (more, c.error_format) {
                (0, _) => {}
                // One JSON object a line stays parseable: the count goes to its own key.
                (n, ErrorFormat::Json) => eprintln!("{}", serde_json::json!({ "more_errors": n })),
                (n, ErrorFormat::Human) => eprintln!(
                    "error: {n} more error{} not shown (the first {MAX_SHOWN_ERRORS} are above)",
                    if n == 1 { "" } else { "s" }
                ),
            }
            if c.error_format == ErrorFormat::Human {
                let n = errors.len();
                eprintln!(
                    "error: {}: {n} error{} found",
                    source.name,
                    if n == 1 { "" } else { "s" }
                );
            }
            ExitCode::FAILURE
        }
    }
}
