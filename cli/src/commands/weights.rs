//! `strata weights FILE W.safetensors`: lines up a weights file's tensors with the
//! model's parameters (and other persistent buffers, such as batch norm's running
//! statistics) by name: matched, missing from the file, unused by the model, or of
//! another dtype or shape. Exit 0 when every tensor matches, 1 otherwise.
//!
//! The model is compiled with its train section, so the fitted normalization
//! (`normalize.offset`, `normalize.scale`) is one of its tensors when the section has
//! one; optimizer state (`optim.…`) is not expected in the file, and is listed only when
//! the file holds some.

use super::{Common, compile_reported, fail, load_source, options};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_artifact::weights::{WeightsMatch, compare_weights};

#[derive(Args, Debug)]
pub(super) struct WeightsArgs {
    #[command(flatten)]
    common: Common,
    /// The weights file (`.safetensors`), for example a PyTorch `state_dict`.
    weights: PathBuf,
}

pub(super) fn run(a: &WeightsArgs) -> ExitCode {
    let c = &a.common;
    let source = match load_source(&c.file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = match options(c) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let compiled = match compile_reported(&source, &opts, c.error_format) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let bytes = match std::fs::read(&a.weights) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read {}: {e}", a.weights.display())),
    };
    let mut entries = match compare_weights(&compiled.artifact.manifest, &bytes) {
        Ok(entries) => entries,
        Err(e) => return fail(format!("{}: {e}", a.weights.display())),
    };
    entries.retain(|e| {
        !(e.status == WeightsMatch::Missing
            && e.key
                .starts_with(strata_artifact::weight_keys::OPTIMIZER_PREFIX))
    });
    let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    let count = |status: WeightsMatch| entries.iter().filter(|e| e.status == status).count();
    for e in &entries {
        let (word, detail) = match e.status {
            WeightsMatch::Matched => ("matched", e.model.clone().unwrap_or_default()),
            WeightsMatch::Missing => (
                "missing",
                format!("model {}", e.model.clone().unwrap_or_default()),
            ),
            WeightsMatch::Unused => (
                "unused",
                format!("file {}", e.file.clone().unwrap_or_default()),
            ),
            WeightsMatch::Mismatch => (
                "mismatch",
                format!(
                    "model {}, file {}",
                    e.model.clone().unwrap_or_default(),
                    e.file.clone().unwrap_or_default()
                ),
            ),
        };
        println!("{word:<8}  {:<width$}  {detail}", e.key);
    }
    let (missing, unused, mismatched) = (
        count(WeightsMatch::Missing),
        count(WeightsMatch::Unused),
        count(WeightsMatch::Mismatch),
    );
    println!(
        "{}: {} matched, {missing} missing, {unused} unused, {mismatched} mismatched",
        a.weights.display(),
        count(WeightsMatch::Matched),
    );
    if missing + unused + mismatched == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
