//! Source text -> AST: the pest grammar (`strata.pest`) and the AST with spans. Spans,
//! source files and diagnostics are [`crate::source`]'s.

pub mod ast;
pub mod parse;

pub use parse::parse;
