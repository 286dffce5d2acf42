//! Diagnostics: one type for every user mistake, rendered with codespan-reporting or
//! as JSON.

use super::file::SourceFile;
use super::span::Span;
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use serde::Serialize;

/// The kinds of mistake, each with a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// E0001: the text does not parse.
    Syntax,
    /// E0002: a name that is not bound.
    UnknownName,
    /// E0003: a call to something that is not a layer, block or function.
    UnknownLayer,
    /// E0004: too many or too few arguments.
    Arity,
    /// E0005: an argument of the wrong kind, or an unknown named argument.
    BadArgument,
    /// E0006: shapes that do not fit.
    ShapeMismatch,
    /// E0007: element types that do not fit.
    DTypeMismatch,
    /// E0008: a name bound twice.
    DuplicateBinding,
    /// E0009: an input no output depends on.
    UnusedInput,
    /// E0010: a hyper-parameter with a value it cannot take.
    BadHyperParam,
    /// E0011: the file has no model, or not the one asked for.
    NoModel,
    /// E0012: a model without outputs, or a block without `return`.
    MissingOutput,
    /// E0013: a block that calls itself.
    Recursion,
    /// E0014: a statement where it is not allowed (e.g. `input` in a block).
    Misplaced,
    /// E0015: the model exceeds one of the compiler's limits (nesting depth, graph size,
    /// parameter bytes; see `compiler/src/limits.rs`).
    TooLarge,
    /// E0016: a model or train section defined twice.
    DuplicateSection,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::Syntax => "E0001",
            ErrorCode::UnknownName => "E0002",
            ErrorCode::UnknownLayer => "E0003",
            ErrorCode::Arity => "E0004",
            ErrorCode::BadArgument => "E0005",
            ErrorCode::ShapeMismatch => "E0006",
            ErrorCode::DTypeMismatch => "E0007",
            ErrorCode::DuplicateBinding => "E0008",
            ErrorCode::UnusedInput => "E0009",
            ErrorCode::BadHyperParam => "E0010",
            ErrorCode::NoModel => "E0011",
            ErrorCode::MissingOutput => "E0012",
            ErrorCode::Recursion => "E0013",
            ErrorCode::Misplaced => "E0014",
            ErrorCode::TooLarge => "E0015",
            ErrorCode::DuplicateSection => "E0016",
        }
    }
}

/// One error in a model file: a code, a message, the primary span, secondary labels and
/// notes (the last may be a hint).
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: ErrorCode,
    pub message: String,
    pub span: Span,
    /// What to say under the primary span.
    pub label: String,
    pub secondary: Vec<(Span, String)>,
    pub notes: Vec<String>,
    /// This stands for a mistake already reported: a use of a binding whose own
    /// definition failed. Elaboration's recovery drops it, so one mistake is reported
    /// once and not again at every binding that depends on it.
    pub(crate) follows_earlier: bool,
}

impl Diagnostic {
    pub fn error(code: ErrorCode, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            notes: Vec::new(),
            follows_earlier: false,
        }
    }

    /// The error of a use of `span`'s name, whose definition failed and was reported
    /// (see the `follows_earlier` field); it is never shown.
    pub(crate) fn follow_up(span: Span) -> Diagnostic {
        let mut d = Diagnostic::error(
            ErrorCode::UnknownName,
            "uses a binding whose definition failed",
            span,
        );
        d.follows_earlier = true;
        d
    }

    /// Whether this stands for a mistake already reported.
    pub fn is_follow_up(&self) -> bool {
        self.follows_earlier
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(self, help: impl Into<String>) -> Diagnostic {
        let help = help.into();
        self.with_note(format!("help: {help}"))
    }

    /// Renders like rustc (no colour), for terminals and snapshots.
    pub fn render(&self, source: &SourceFile) -> String {
        render_all(std::slice::from_ref(self), source)
    }

    /// The JSON form (`--error-format json`): code, message, file, line/column and byte
    /// range of each span.
    pub fn to_json(&self, source: &SourceFile) -> serde_json::Value {
        let span_json = |span: Span, label: &str| {
            let (line, column) = source.line_col(span.start as usize);
            let (end_line, end_column) = source.line_col(span.end as usize);
            serde_json::json!({
                "file": source.name, "start": span.start, "end": span.end,
                "line": line, "column": column, "end_line": end_line, "end_column": end_column,
                "label": label,
            })
        };
        serde_json::json!({
            "severity": "error",
            "code": self.code.code(),
            "message": self.message,
            "primary": span_json(self.span, &self.label),
            "secondary": self.secondary.iter().map(|(s, l)| span_json(*s, l)).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// Renders several diagnostics in order.
pub fn render_all(diags: &[Diagnostic], source: &SourceFile) -> String {
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = Config::default();
    let mut out = String::new();
    for d in diags {
        let clamp = |s: Span| {
            let len = source.text.len();
            let start = (s.start as usize).min(len);
            start..(s.end as usize).clamp(start, len)
        };
        let mut labels = vec![Label::primary((), clamp(d.span)).with_message(d.label.clone())];
        labels.extend(
            d.secondary
                .iter()
                .map(|(s, l)| Label::secondary((), clamp(*s)).with_message(l.clone())),
        );
        let cs = CsDiagnostic::error()
            .with_code(d.code.code())
            .with_message(d.message.clone())
            .with_labels(labels)
            .with_notes(d.notes.clone());
        out.push_str(&render_one(&config, &file, &cs));
    }
    out
}

fn render_one(config: &Config, file: &SimpleFile<&str, &str>, d: &CsDiagnostic<()>) -> String {
    let mut buf = String::new();
    // Rendering into a String cannot fail for these files; an error would mean a span
    // outside the text, which `render_all` clamps.
    let _ = term::emit_to_string(&mut buf, config, file, d);
    buf
}
