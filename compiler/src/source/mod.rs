//! Where things come from in a model file: [`Span`]s (byte ranges), the [`SourceFile`]
//! they index (with line/column mapping), and the [`Diagnostic`] every stage reports a
//! user's mistake with. The parser, elaboration, the IR and the passes all use this one
//! module, which depends on none of them.

pub mod diagnostic;
pub mod file;
pub mod span;

pub use diagnostic::{Diagnostic, ErrorCode};
pub use file::SourceFile;
pub use span::Span;
