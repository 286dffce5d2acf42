//! Source text -> AST: the pest grammar (`strata.pest`), the AST with spans, and the
//! diagnostics every stage of the compiler reports user mistakes with.

pub mod ast;
pub mod diagnostic;
pub mod parse;
pub mod source;

pub use diagnostic::{Diagnostic, ErrorCode};
pub use parse::parse;
pub use source::SourceFile;
