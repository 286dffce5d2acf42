//! The standard library: blocks written in the language itself (`stdlib.strata`),
//! parsed once and available to every model file.
//!
//! Its spans are offsets into its own text, not the user's file, so nothing built from
//! it may keep them: a stdlib block's ops take the span of the call that used it, and a
//! mistake inside it (a bad argument passed down) is reported at that call.

use crate::syntax::ast::{ModelDef, Program};
use std::sync::OnceLock;

/// The library's source text.
pub const SOURCE: &str = include_str!("stdlib.strata");

/// The parsed library.
pub fn program() -> &'static Program {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        // The text is part of the compiler; the test suite parses it.
        crate::syntax::parse::parse(SOURCE).expect("the standard library parses")
    })
}

/// Whether `block` is one of the library's.
pub fn contains(block: &ModelDef) -> bool {
    program().blocks.iter().any(|b| std::ptr::eq(b, block))
}
