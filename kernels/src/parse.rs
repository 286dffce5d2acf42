//! A parser for the text form [`print`](crate::print) writes, so a test can hold kernels
//! as text (`tests/golden/lower/*.kernels`) and read them back as [`Kernel`]s.
//!
//! The format is line-oriented, one construct a line:
//!
//! ```text
//! kernel NAME KIND (BUFFER: TYPE[DIMS] ACCESS, …) {
//!   BODY LINES
//! }
//! ```
//!
//! where `KIND` is `map [DIMS]` (one store a line), `reduce [DIMS] over [DIMS]` (the
//! `acc = OP(VALUE)` line, then the store of the epilogue), `contract batch [DIMS] m D n D
//! k D` (the `a = …` and `b = …` operand lines, the fixed `acc = sum_k …` line, then the
//! store of the epilogue), `scatter_add over [DIMS]` (one line `OUT[IDS[INDEX], iN] +=
//! VALUE`, `iN` the column, the variable after the points'), or `parts N` (then `N` blocks `part I KIND { … }`). Indentation
//! is free; `#` starts a comment that runs to the end of the line. Expressions and indices
//! are read with the printer's precedence: `+` and `*` associate to the left, `/` and `%`
//! apply to the parenthesized index before them, binary expressions are parenthesized.
//! This module reads the lines and what they hold; `cursor` reads the words, indices and
//! expressions inside one line.
//!
//! Round trip: `parse(print(k)) == k` for every kernel, and `print(parse(text)) == text`
//! for printed text. A load names its buffer, so a buffer whose name an earlier slot
//! already has is written `name@slot`. A nested reduction's variables are named by the
//! printer after the enclosing ones, so the parser checks they are exactly those names.

use crate::ir::*;
use crate::print::slot_names;
use cursor::{Cursor, reduce_named};
use std::fmt;

/// Why the text is not a kernel, with the 1-based line it was found on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses the text of exactly one kernel.
pub fn parse_kernel(text: &str) -> Result<Kernel, ParseError> {
    let mut kernels = parse_kernels(text)?;
    match kernels.len() {
        1 => Ok(kernels.remove(0)),
        n => Err(ParseError {
            line: 1,
            message: format!("expected one kernel, found {n}"),
        }),
    }
}

/// Parses any number of kernels, one after the other (blank lines and comments between
/// them are skipped).
pub fn parse_kernels(text: &str) -> Result<Vec<Kernel>, ParseError> {
    let mut lines = Lines::new(text);
    let mut kernels = Vec::new();
    while lines.peek().is_some() {
        kernels.push(kernel(&mut lines)?);
    }
    Ok(kernels)
}

/// The non-blank lines of the text, trimmed and without comments, with their numbers.
struct Lines<'a> {
    lines: std::iter::Peekable<std::vec::IntoIter<(usize, &'a str)>>,
    /// The number of the text's last line, where a missing line is reported.
    last: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split_once('#').map_or(l, |(l, _)| l).trim()))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        Lines {
            lines: lines.into_iter().peekable(),
            last: text.lines().count().max(1),
        }
    }

    fn peek(&mut self) -> Option<(usize, &'a str)> {
        self.lines.peek().copied()
    }

    /// The next line, or an error saying `what` was expected there.
    fn next(&mut self, what: &str) -> Result<(usize, &'a str), ParseError> {
        self.lines.next().ok_or_else(|| ParseError {
            line: self.last,
            message: format!("the text ends where {what} was expected"),
        })
    }

    /// The next line, which must be `}`.
    fn close(&mut self, what: &str) -> Result<(), ParseError> {
        let (line, text) = self.next(&format!("the `}}` closing {what}"))?;
        if text == "}" {
            Ok(())
        } else {
            Err(ParseError {
                line,
                message: format!("expected the `}}` closing {what}, found `{text}`"),
            })
        }
    }
}

/// What a header says a kernel or part holds, before its lines are read.
enum Header {
    Body(Kind),
    Parts(usize),
}

/// What a header says a body is.
enum Kind {
    Map(Vec<Dim>),
    Reduce(Vec<Dim>, Vec<Dim>),
    Contract {
        batch: Vec<Dim>,
        summed: Vec<Dim>,
        m: Dim,
        n: Dim,
        k: Dim,
        terms: Vec<Dim>,
    },
    ScatterAdd(Vec<Dim>),
}

/// `kernel NAME KIND (BUFFERS) {`, the body, `}`.
fn kernel(lines: &mut Lines) -> Result<Kernel, ParseError> {
    let (line, header) = lines.next("a kernel")?;
    let err = |message: String| ParseError { line, message };
    let rest = header
        .strip_prefix("kernel ")
        .ok_or_else(|| err(format!("expected `kernel NAME …`, found `{header}`")))?;
    let (name, rest) = rest
        .split_once(' ')
        .ok_or_else(|| err("expected what the kernel computes after its name".into()))?;
    let (kind, buffers) = rest
        .split_once('(')
        .ok_or_else(|| err("expected the buffers in `( … )` after the kind".into()))?;
    let buffers = buffers
        .strip_suffix('{')
        .map(str::trim_end)
        .and_then(|b| b.strip_suffix(')'))
        .ok_or_else(|| err("expected the header to end with `) {`".into()))?;
    let (buffers, names) = buffer_decls(buffers).map_err(err)?;
    let body = match parse_header(kind.trim()).map_err(err)? {
        Header::Parts(count) => {
            // Not sized by `count`: the text may announce far more parts than it holds.
            let mut parts = Vec::new();
            for i in 0..count {
                let (line, text) = lines.next(&format!("part {i}"))?;
                let err = |message: String| ParseError { line, message };
                let kind = text
                    .strip_prefix(&format!("part {i} "))
                    .and_then(|r| r.strip_suffix('{'))
                    .ok_or_else(|| err(format!("expected `part {i} KIND {{`, found `{text}`")))?;
                let Header::Body(kind) = parse_header(kind.trim()).map_err(err)? else {
                    return Err(err("parts are not nested".into()));
                };
                parts.push(body(lines, kind, &names)?);
                lines.close(&format!("part {i}"))?;
            }
            KernelBody::Parts(parts)
        }
        Header::Body(kind) => body(lines, kind, &names)?,
    };
    lines.close(&format!("kernel `{name}`"))?;
    Ok(Kernel {
        name: name.to_string(),
        buffers,
        body,
    })
}

/// `x: f32[batch, 4] r, out: f32[batch, 4] w`: the buffers, and the name each slot is
/// written with in the body (`name@slot` for a name an earlier slot has, see
/// [`slot_names`]).
fn buffer_decls(text: &str) -> Result<(Vec<BufferDecl>, Vec<String>), String> {
    if text.trim().is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Split at the commas outside the brackets of the shapes.
    let mut decls = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                decls.push(buffer_decl(text[start..i].trim())?);
                start = i + 1;
            }
            _ => {}
        }
    }
    decls.push(buffer_decl(text[start..].trim())?);
    let names: Vec<String> = decls.iter().map(|d| d.name.clone()).collect();
    for (i, decl) in decls.iter_mut().enumerate() {
        if let Some(base) = decl.name.strip_suffix(&format!("@{i}"))
            && names[..i].iter().any(|n| n == base)
        {
            decl.name = base.to_string();
        }
    }
    if slot_names(&decls) != names {
        let twice = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
            .map_or("?", |(_, n)| n.as_str());
        return Err(format!(
            "buffer `{twice}` is declared twice: a load could not say which (a later \
             buffer of the same name is written `{twice}@SLOT`)"
        ));
    }
    Ok((decls, names))
}

/// `x: f32[batch, 4] r`.
fn buffer_decl(text: &str) -> Result<BufferDecl, String> {
    let (name, ty) = text
        .split_once(':')
        .ok_or_else(|| format!("expected a buffer `NAME: TYPE[DIMS] ACCESS`, found `{text}`"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "[]()".contains(c)) {
        return Err(format!("`{name}` is not a buffer name"));
    }
    let mut c = Cursor::new(ty.trim(), &[]);
    let dtype = match c.word() {
        "f32" => ScalarType::F32,
        "i32" => ScalarType::I32,
        other => return Err(format!("unknown element type `{other}` of `{name}`")),
    };
    let shape = c.dims()?;
    let access = match c.word() {
        "r" => Access::Read,
        "w" => Access::Write,
        "rw" => Access::ReadWrite,
        other => {
            return Err(format!(
                "expected `r`, `w` or `rw` for `{name}`, found `{other}`"
            ));
        }
    };
    c.end()?;
    Ok(BufferDecl {
        name: name.to_string(),
        dtype,
        shape,
        access,
    })
}

/// `map [DIMS]`, `reduce [DIMS] over [DIMS]`, `contract batch [DIMS] m D n D k D`,
/// `scatter_add over [DIMS]`, `parts N`.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut c = Cursor::new(text, &[]);
    let kind = match c.word() {
        "map" => Header::Body(Kind::Map(c.dims()?)),
        "reduce" => {
            let space = c.dims()?;
            c.expect("over")?;
            Header::Body(Kind::Reduce(space, c.dims()?))
        }
        "contract" => {
            c.expect("batch")?;
            let batch = c.dims()?;
            let summed = if c.eat("sum") { c.dims()? } else { Vec::new() };
            c.expect("m")?;
            let m = c.dim()?;
            c.expect("n")?;
            let n = c.dim()?;
            c.expect("k")?;
            let k = c.dim()?;
            let terms = if c.eat("terms") {
                c.dims()?
            } else {
                Vec::new()
            };
            Header::Body(Kind::Contract {
                batch,
                summed,
                m,
                n,
                k,
                terms,
            })
        }
        "scatter_add" => {
            c.expect("over")?;
            Header::Body(Kind::ScatterAdd(c.dims()?))
        }
        "parts" => {
            let count = c.word();
            Header::Parts(
                count
                    .parse()
                    .map_err(|_| format!("expected the number of parts, found `{count}`"))?,
            )
        }
        other => {
            return Err(format!(
                "expected `map`, `reduce`, `contract`, `scatter_add` or `parts`, found `{other}`"
            ));
        }
    };
    c.end()?;
    Ok(kind)
}

/// The lines of one body of kind `kind`, up to (not including) its closing `}`.
fn body(lines: &mut Lines, kind: Kind, names: &[String]) -> Result<KernelBody, ParseError> {
    match kind {
        Kind::Map(space) => {
            let mut stores = Vec::new();
            while let Some((line, text)) = lines.peek() {
                if text == "}" {
                    break;
                }
                lines.next("a store")?;
                let store = store(text, space.len(), names)
                    .map_err(|message| ParseError { line, message })?;
                stores.push(store);
            }
            Ok(KernelBody::Map { space, stores })
        }
        Kind::Reduce(space, reduce) => {
            let (line, text) = lines.next("the reduction's `acc = OP(VALUE)` line")?;
            let (op, value) = fold_line(text, space.len() + reduce.len(), names)
                .map_err(|message| ParseError { line, message })?;
            let (line, text) = lines.next("the reduction's store")?;
            let out =
                store(text, space.len(), names).map_err(|message| ParseError { line, message })?;
            Ok(KernelBody::Reduce {
                space,
                reduce,
                op,
                value,
                out,
            })
        }
        Kind::ScatterAdd(over) => {
            let (line, text) = lines.next("the scatter-add's `OUT[IDS[INDEX], iN] += VALUE`")?;
            scatter_line(text, over, names)
                .map(KernelBody::ScatterAdd)
                .map_err(|message| ParseError { line, message })
        }
        Kind::Contract {
            batch,
            summed,
            m,
            n,
            k,
            terms: depths,
        } => {
            let mut operand = |label: &str| {
                let (line, text) = lines.next(&format!("operand `{label}`"))?;
                matrix_operand(text, label, names).map_err(|message| ParseError { line, message })
            };
            let a = operand("a")?;
            let b = operand("b")?;
            let mut terms = Vec::with_capacity(depths.len());
            for (t, k) in depths.into_iter().enumerate() {
                let a = operand(&format!("a{}", t + 1))?;
                let b = operand(&format!("b{}", t + 1))?;
                terms.push(Term { k, a, b });
            }
            let product = format!("acc = {}", crate::print::product_sum(terms.len()));
            let (line, text) = lines.next(&format!("`{product}`"))?;
            if text.split_whitespace().ne(product.split_whitespace()) {
                return Err(ParseError {
                    line,
                    message: format!("expected `{product}`, found `{text}`"),
                });
            }
            let (line, text) = lines.next("the product's store `OUT[row-major] = …`")?;
            let (out, epilogue) = contract_store(text, batch.len() + 2, names)
                .map_err(|message| ParseError { line, message })?;
            Ok(KernelBody::Contract(Contraction {
                batch,
                summed,
                m,
                n,
                k,
                a,
                b,
                out,
                epilogue,
                terms,
            }))
        }
    }
}

/// `OUT[IDS[INDEX], iN] += VALUE`, the line of a scatter-add over `over`.
fn scatter_line(text: &str, over: Vec<Dim>, names: &[String]) -> Result<ScatterAdd, String> {
    let mut c = Cursor::new(text, names);
    let out = c.buffer()?;
    c.expect("[")?;
    let ids = c.buffer()?;
    c.expect("[")?;
    let id_index = c.index()?;
    c.expect("]")?;
    c.expect(",")?;
    let column = format!("i{}", over.len());
    let word = c.word();
    if word != column {
        return Err(format!(
            "the column is `{column}` (after the {} points' variables), found `{word}`",
            over.len()
        ));
    }
    c.expect("]")?;
    c.expect("+=")?;
    let value = c.expr(over.len() + 1)?;
    c.end()?;
    Ok(ScatterAdd {
        over,
        ids,
        id_index,
        value,
        out,
    })
}

/// `OUT[INDEX] = VALUE`, with `scope` loop variables.
fn store(text: &str, scope: usize, names: &[String]) -> Result<Store, String> {
    let mut c = Cursor::new(text, names);
    let buf = c.buffer()?;
    c.expect("[")?;
    let index = c.index()?;
    c.expect("]")?;
    c.expect("=")?;
    let value = c.expr(scope)?;
    c.end()?;
    Ok(Store { buf, index, value })
}

/// `acc = OP(VALUE)`: a reduction's fold.
fn fold_line(text: &str, scope: usize, names: &[String]) -> Result<(ReduceOp, Expr), String> {
    let mut c = Cursor::new(text, names);
    c.expect("acc")?;
    c.expect("=")?;
    let name = c.word();
    let op = reduce_named(name)
        .ok_or_else(|| format!("expected `sum`, `max` or `min`, found `{name}`"))?;
    c.expect("(")?;
    let value = c.expr(scope)?;
    c.expect(")")?;
    c.end()?;
    Ok((op, value))
}

/// `a = NAME[OFFSET + row * ROW_STRIDE + col * COL_STRIDE]`.
fn matrix_operand(text: &str, label: &str, names: &[String]) -> Result<MatrixOperand, String> {
    let shape = format!("`{label} = NAME[OFFSET + row * STRIDE + col * STRIDE]`");
    let mut c = Cursor::new(text, names);
    c.expect(label)?;
    c.expect("=")?;
    let buf = c.buffer()?;
    c.expect("[")?;
    // The offset and strides never hold `row` or `col`: those words split the three.
    let inner = c
        .rest()
        .strip_suffix(']')
        .ok_or_else(|| format!("expected {shape}"))?;
    if let Some((offset, window)) = inner.split_once("+ window ") {
        let mut c = Cursor::new(offset.trim(), names);
        let offset = c.index()?;
        c.end()?;
        return Ok(MatrixOperand::windowed(
            buf,
            offset,
            window_operand(window)?,
        ));
    }
    let (offset, strides) = inner
        .split_once("+ row *")
        .ok_or_else(|| format!("expected {shape}"))?;
    let (row, col) = strides
        .split_once("+ col *")
        .ok_or_else(|| format!("expected {shape}"))?;
    let index = |text: &str| {
        let mut c = Cursor::new(text.trim(), names);
        let ix = c.index()?;
        c.end()?;
        Ok::<_, String>(ix)
    };
    Ok(MatrixOperand {
        buf,
        offset: index(offset)?,
        row_stride: index(row)?,
        col_stride: index(col)?,
        window: None,
    })
}

/// `C x H x W kernel KH x KW stride S padding P dilation D` (after `window`), as
/// [`crate::print::window_text`] writes it.
fn window_operand(text: &str) -> Result<ImageWindow, String> {
    let shape = "`window C x H x W kernel KH x KW stride S padding P dilation D`";
    let words: Vec<&str> = text.split_whitespace().collect();
    let [
        c,
        "x",
        h,
        "x",
        w,
        "kernel",
        kh,
        "x",
        kw,
        "stride",
        s,
        "padding",
        p,
        "dilation",
        d,
    ] = words[..]
    else {
        return Err(format!("expected {shape}, got `window {text}`"));
    };
    let number = |t: &str| {
        t.parse::<u64>()
            .map_err(|_| format!("expected a count in {shape}, got `{t}`"))
    };
    Ok(ImageWindow {
        channels: number(c)?,
        height: number(h)?,
        width: number(w)?,
        kh: number(kh)?,
        kw: number(kw)?,
        stride: number(s)?,
        padding: number(p)?,
        dilation: number(d)?,
    })
}

/// `OUT[row-major] = EPILOGUE`.
fn contract_store(text: &str, scope: usize, names: &[String]) -> Result<(usize, Expr), String> {
    let mut c = Cursor::new(text, names);
    let out = c.buffer()?;
    c.expect("[")?;
    c.expect("row-major")?;
    c.expect("]")?;
    c.expect("=")?;
    let epilogue = c.expr(scope)?;
    c.end()?;
    Ok((out, epilogue))
}

mod cursor;
#[cfg(test)]
mod tests;
