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
//! store of the epilogue), or `parts N` (then `N` blocks `part I KIND { … }`). Indentation
//! is free; `#` starts a comment that runs to the end of the line. Expressions and indices
//! are read with the printer's precedence: `+` and `*` associate to the left, `/` and `%`
//! apply to the parenthesized index before them, binary expressions are parenthesized.
//!
//! Round trip: `parse(print(k)) == k` for every kernel, and `print(parse(text)) == text`
//! for printed text. A load names its buffer, so a buffer whose name an earlier slot
//! already has is written `name@slot`. A nested reduction's variables are named by the
//! printer after the enclosing ones, so the parser checks they are exactly those names.

use crate::ir::*;
use crate::print::{BinaryText, binary_text, reduce_name, slot_names, unary_name};
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
        m: Dim,
        n: Dim,
        k: Dim,
    },
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
            let mut parts = Vec::with_capacity(count);
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
/// `parts N`.
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
            c.expect("m")?;
            let m = c.dim()?;
            c.expect("n")?;
            let n = c.dim()?;
            c.expect("k")?;
            let k = c.dim()?;
            Header::Body(Kind::Contract { batch, m, n, k })
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
                "expected `map`, `reduce`, `contract` or `parts`, found `{other}`"
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
        Kind::Contract { batch, m, n, k } => {
            let mut operand = |label: &str| {
                let (line, text) = lines.next(&format!("operand `{label}`"))?;
                matrix_operand(text, label, names).map_err(|message| ParseError { line, message })
            };
            let a = operand("a")?;
            let b = operand("b")?;
            let (line, text) = lines.next("`acc = sum_k a[m, k] * b[k, n]`")?;
            let product = "acc = sum_k a[m, k] * b[k, n]";
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
                m,
                n,
                k,
                a,
                b,
                out,
                epilogue,
            }))
        }
    }
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

fn unary_named(name: &str) -> Option<UnaryOp> {
    use UnaryOp::*;
    [Neg, Abs, Exp, Log, Sqrt, Recip, Tanh, Sigmoid, Relu]
        .into_iter()
        .find(|op| unary_name(*op) == name)
}

const BINARY_OPS: [BinaryOp; 12] = {
    use BinaryOp::*;
    [Add, Sub, Mul, Div, Max, Min, Pow, Lt, Le, Gt, Ge, Eq]
};

fn reduce_named(name: &str) -> Option<ReduceOp> {
    [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min]
        .into_iter()
        .find(|op| reduce_name(*op) == name)
}

/// A scanner over one line's text; the slots' names resolve the buffers of loads.
struct Cursor<'a> {
    rest: &'a str,
    names: &'a [String],
}

/// Characters that end a word (a name, a number, a keyword).
const DELIMITERS: &str = "()[],=<>+*/%";

impl<'a> Cursor<'a> {
    fn new(text: &'a str, names: &'a [String]) -> Cursor<'a> {
        Cursor { rest: text, names }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}`, found `{}`", self.found()))
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.rest))
        }
    }

    /// What is left, for messages ("the end of the line" when nothing is).
    fn found(&self) -> &str {
        if self.rest.is_empty() {
            "the end of the line"
        } else {
            self.rest
        }
    }

    fn rest(&mut self) -> &'a str {
        let rest = self.rest.trim();
        self.rest = "";
        rest
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest.chars().next()
    }

    /// The next word: everything up to whitespace or a delimiter (`-` is no delimiter:
    /// `-2`, `1e-7`, `row-major`).
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || DELIMITERS.contains(c))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word
    }

    fn integer(&mut self) -> Result<i64, String> {
        let word = self.word();
        word.parse()
            .map_err(|_| format!("expected an integer, found `{word}`"))
    }

    fn dim(&mut self) -> Result<Dim, String> {
        match self.word() {
            "batch" => Ok(Dim::Batch),
            word => word
                .parse()
                .map(Dim::Fixed)
                .map_err(|_| format!("expected a dimension, found `{word}`")),
        }
    }

    /// `[batch, 4]`, `[]`.
    fn dims(&mut self) -> Result<Vec<Dim>, String> {
        self.expect("[")?;
        let mut dims = Vec::new();
        if self.eat("]") {
            return Ok(dims);
        }
        loop {
            dims.push(self.dim()?);
            if self.eat("]") {
                return Ok(dims);
            }
            self.expect(",")?;
        }
    }

    /// A buffer named in the table: its slot.
    fn buffer(&mut self) -> Result<usize, String> {
        let name = self.word();
        self.slot(name)
    }

    fn slot(&self, name: &str) -> Result<usize, String> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("`{name}` is not a buffer of this kernel"))
    }

    /// `i0 * 128 + i1`: sums of products of factors, left to right.
    fn index(&mut self) -> Result<Index, String> {
        let mut sum = self.index_product()?;
        while self.eat("+") {
            let term = self.index_product()?;
            sum = Index::Add(Box::new(sum), Box::new(term));
        }
        Ok(sum)
    }

    fn index_product(&mut self) -> Result<Index, String> {
        let mut product = self.index_factor()?;
        while self.eat("*") {
            let factor = self.index_factor()?;
            product = Index::Mul(Box::new(product), Box::new(factor));
        }
        Ok(product)
    }

    /// `i3`, `-2`, `batch`, `(INDEX)`, `(INDEX) / N`, `(INDEX) % N`.
    fn index_factor(&mut self) -> Result<Index, String> {
        if self.eat("(") {
            let inner = self.index()?;
            self.expect(")")?;
            if self.eat("/") {
                return Ok(Index::Div(Box::new(inner), self.divisor()?));
            }
            if self.eat("%") {
                return Ok(Index::Rem(Box::new(inner), self.divisor()?));
            }
            return Ok(inner);
        }
        let word = self.word();
        if word == "batch" {
            return Ok(Index::Batch);
        }
        if let Some(v) = word.strip_prefix('i')
            && !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
        {
            return v
                .parse()
                .map(Index::Var)
                .map_err(|_| format!("bad loop variable `{word}`"));
        }
        word.parse().map(Index::Const).map_err(|_| {
            if word.is_empty() {
                format!("expected an index, found `{}`", self.found())
            } else {
                format!("expected an index (`iN`, a number, `batch`), found `{word}`")
            }
        })
    }

    fn divisor(&mut self) -> Result<i64, String> {
        let d = self.integer()?;
        if d > 0 {
            Ok(d)
        } else {
            Err(format!("a divisor must be positive, found {d}"))
        }
    }

    /// A scalar expression with `scope` loop variables in scope.
    fn expr(&mut self, scope: usize) -> Result<Expr, String> {
        if self.eat("(") {
            let a = self.expr(scope)?;
            let op = self.infix()?;
            let b = self.expr(scope)?;
            self.expect(")")?;
            return Ok(Expr::binary(op, a, b));
        }
        let word = self.word();
        if word.is_empty() {
            return Err(format!("expected an expression, found `{}`", self.found()));
        }
        match self.rest.chars().next() {
            Some('[') => {
                let buf = self.slot(word)?;
                self.expect("[")?;
                let index = self.index()?;
                self.expect("]")?;
                Ok(Expr::Load { buf, index })
            }
            Some('(') => {
                self.expect("(")?;
                let e = self.call(word, scope)?;
                self.expect(")")?;
                Ok(e)
            }
            _ if word == "acc" => Ok(Expr::Acc),
            _ => word
                .parse()
                .map(Expr::Const)
                .map_err(|_| format!("expected an expression, found `{word}`")),
        }
    }

    /// The operator of `(a OP b)`.
    fn infix(&mut self) -> Result<BinaryOp, String> {
        self.skip_ws();
        // Longest symbol first: `<=` before `<`.
        let mut ops: Vec<(BinaryOp, &str)> = BINARY_OPS
            .into_iter()
            .filter_map(|op| match binary_text(op) {
                BinaryText::Infix(sym) => Some((op, sym)),
                BinaryText::Function(_) => None,
            })
            .collect();
        ops.sort_by_key(|(_, sym)| std::cmp::Reverse(sym.len()));
        ops.into_iter()
            .find(|(_, sym)| self.eat(sym))
            .map(|(op, _)| op)
            .ok_or_else(|| format!("expected a binary operator, found `{}`", self.found()))
    }

    /// The arguments of `name(…)` (after the `(`, up to the `)`).
    fn call(&mut self, name: &str, scope: usize) -> Result<Expr, String> {
        if let Some(op) = unary_named(name) {
            return Ok(Expr::unary(op, self.expr(scope)?));
        }
        if let Some(op) = reduce_named(name)
            && let Some(extent) = self.nested_bounds(scope)?
        {
            let value = self.expr(scope + extent.len())?;
            self.expect("for")?;
            // The bounds were read ahead: skip them.
            for i in 0..extent.len() {
                if i > 0 {
                    self.expect(",")?;
                }
                self.word();
                self.expect("<")?;
                self.dim()?;
            }
            return Ok(Expr::Reduce {
                op,
                extent,
                value: Box::new(value),
            });
        }
        if let Some(op) = BINARY_OPS
            .into_iter()
            .find(|op| matches!(binary_text(*op), BinaryText::Function(f) if f == name))
        {
            let a = self.expr(scope)?;
            self.expect(",")?;
            let b = self.expr(scope)?;
            return Ok(Expr::binary(op, a, b));
        }
        match name {
            "float" => Ok(Expr::IndexValue(self.index()?)),
            "select" => {
                let cond = self.expr(scope)?;
                self.expect(",")?;
                let then = self.expr(scope)?;
                self.expect(",")?;
                let otherwise = self.expr(scope)?;
                Ok(Expr::Select {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                })
            }
            "uniform" => {
                self.expect("seed")?;
                self.expect("=")?;
                let seed = self.word();
                let seed = seed
                    .parse()
                    .map_err(|_| format!("expected a seed, found `{seed}`"))?;
                self.expect(",")?;
                let index = self.index()?;
                self.expect(",")?;
                self.expect("step")?;
                self.expect("=")?;
                let step = self.expr(scope)?;
                Ok(Expr::Uniform {
                    seed,
                    index,
                    step: Box::new(step),
                })
            }
            _ => Err(format!("unknown function `{name}`")),
        }
    }

    /// The extent of a nested reduction `OP(VALUE for iS < D, …)` whose `VALUE` starts
    /// here, or None when no `for` follows the value at this depth (`max(a, b)`). The
    /// bounds come after the value, but the value's scope depends on them: they are read
    /// ahead, and must name the variables after the `scope` enclosing ones in order.
    fn nested_bounds(&self, scope: usize) -> Result<Option<Vec<Dim>>, String> {
        let mut depth = 0i32;
        let mut at = None;
        for (i, c) in self.rest.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' if depth == 0 => break,
                ')' | ']' => depth -= 1,
                _ if depth == 0 && self.rest[i..].starts_with(" for ") => {
                    at = Some(i + " for ".len());
                    break;
                }
                _ => {}
            }
        }
        let Some(at) = at else {
            return Ok(None);
        };
        let mut c = Cursor::new(&self.rest[at..], &[]);
        let mut extent = Vec::new();
        loop {
            let want = format!("i{}", scope + extent.len());
            let var = c.word();
            if var != want {
                return Err(format!(
                    "the nested reduction's variable {} is `{want}` (after the {scope} \
                     enclosing ones), found `{var}`",
                    extent.len()
                ));
            }
            c.expect("<")?;
            extent.push(c.dim()?);
            if c.peek() != Some(',') {
                return Ok(Some(extent));
            }
            c.expect(",")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{self, f32_buffer};

    fn round_trip(k: &Kernel) {
        let text = k.to_string();
        let parsed = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(&parsed, k, "{text}");
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn the_emitters_fixtures_read_back_as_they_were() {
        for k in [
            test_fixtures::bias_add(),
            test_fixtures::dense_relu(),
            test_fixtures::uniform_map(),
            test_fixtures::nested_softmax(),
            test_fixtures::centered_total(),
        ] {
            round_trip(&k);
        }
    }

    fn var(v: usize) -> Box<Index> {
        Box::new(Index::Var(v))
    }

    /// A kernel with every kind of body, index and expression: parts holding a map, a
    /// reduction and a contraction.
    fn every_construct() -> Kernel {
        let shape = [Dim::Batch, Dim::Fixed(6)];
        // `i0 * 6 + (i1 + 2)` and `i0 * (batch * 3)`: right operands of their own
        // operation, which the printer parenthesizes.
        let right_add = Index::Add(
            Box::new(Index::Mul(var(0), Box::new(Index::Const(6)))),
            Box::new(Index::Add(var(1), Box::new(Index::Const(2)))),
        );
        let right_mul = Index::Mul(
            var(0),
            Box::new(Index::Mul(
                Box::new(Index::Batch),
                Box::new(Index::Const(3)),
            )),
        );
        let div_rem = Index::Mul(
            Box::new(Index::Div(
                Box::new(Index::Add(var(1), Box::new(Index::Const(-1)))),
                2,
            )),
            Box::new(Index::Rem(var(0), 5)),
        );
        let load = |buf, index| Expr::Load { buf, index };
        let map = KernelBody::Map {
            space: shape.to_vec(),
            stores: vec![
                Store {
                    buf: 2,
                    index: right_add.clone(),
                    value: Expr::Select {
                        cond: Box::new(Expr::binary(
                            BinaryOp::Le,
                            load(0, right_mul),
                            Expr::Const(-1.5e-7),
                        )),
                        then: Box::new(Expr::binary(
                            BinaryOp::Pow,
                            Expr::unary(UnaryOp::Sigmoid, load(1, div_rem)),
                            Expr::IndexValue(Index::Batch),
                        )),
                        otherwise: Box::new(Expr::Uniform {
                            seed: 42,
                            index: right_add.clone(),
                            step: Box::new(load(1, Index::Const(0))),
                        }),
                    },
                },
                Store {
                    buf: 3,
                    index: Index::Var(1),
                    value: Expr::Reduce {
                        op: ReduceOp::Max,
                        extent: vec![Dim::Fixed(3), Dim::Batch],
                        value: Box::new(Expr::binary(
                            BinaryOp::Min,
                            load(0, Index::Add(var(2), var(3))),
                            Expr::Reduce {
                                op: ReduceOp::Sum,
                                extent: vec![Dim::Fixed(2)],
                                value: Box::new(load(0, Index::Var(4))),
                            },
                        )),
                    },
                },
            ],
        };
        let reduce = KernelBody::Reduce {
            space: vec![Dim::Fixed(6)],
            reduce: vec![Dim::Batch],
            op: ReduceOp::Min,
            value: Expr::unary(UnaryOp::Neg, load(4, Index::Var(1))),
            out: Store {
                buf: 5,
                index: Index::Var(0),
                value: Expr::binary(BinaryOp::Eq, Expr::Acc, Expr::Const(f64::INFINITY)),
            },
        };
        let contract = KernelBody::Contract(Contraction {
            batch: vec![Dim::Fixed(2)],
            m: Dim::Batch,
            n: Dim::Fixed(3),
            k: Dim::Fixed(4),
            a: MatrixOperand {
                buf: 6,
                offset: Index::Mul(var(0), Box::new(Index::Add(Box::new(Index::Batch), var(0)))),
                row_stride: Index::Const(4),
                col_stride: Index::Const(1),
            },
            b: MatrixOperand {
                buf: 7,
                offset: Index::Const(0),
                row_stride: Index::Add(Box::new(Index::Const(1)), Box::new(Index::Const(2))),
                col_stride: Index::Const(4),
            },
            out: 8,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Sub, Expr::Acc, Expr::Const(-0.25)),
            ),
        });
        Kernel {
            name: "every_construct".into(),
            buffers: vec![
                f32_buffer("x", &shape, Access::Read),
                test_fixtures::buffer("step", ScalarType::I32, &[], Access::Read),
                f32_buffer("y", &shape, Access::Write),
                f32_buffer("row", &[Dim::Fixed(6)], Access::ReadWrite),
                f32_buffer("cols", &[Dim::Batch, Dim::Fixed(6)], Access::Read),
                f32_buffer("col_min", &[Dim::Fixed(6)], Access::Write),
                f32_buffer(
                    "a",
                    &[Dim::Fixed(2), Dim::Batch, Dim::Fixed(4)],
                    Access::Read,
                ),
                f32_buffer("b", &[Dim::Fixed(4), Dim::Fixed(3)], Access::Read),
                f32_buffer(
                    "c",
                    &[Dim::Fixed(2), Dim::Batch, Dim::Fixed(3)],
                    Access::Write,
                ),
            ],
            body: KernelBody::Parts(vec![map, reduce, contract]),
        }
    }

    #[test]
    fn every_construct_reads_back_as_it_was() {
        let k = every_construct();
        k.validate().expect("a valid kernel");
        round_trip(&k);
        for i in 0..k.part_count() {
            round_trip(&k.part(i));
        }
    }

    #[test]
    fn right_nested_sums_and_products_keep_their_parentheses() {
        let text = every_construct().to_string();
        assert!(text.contains("y[i0 * 6 + (i1 + 2)]"), "{text}");
        assert!(text.contains("x[i0 * (batch * 3)]"), "{text}");
        assert!(text.contains("step[(i1 + -1) / 2 * (i0) % 5]"), "{text}");
    }

    #[test]
    fn buffers_of_one_name_are_told_apart_by_their_slot() {
        let mut k = test_fixtures::bias_add();
        k.buffers[1].name = "x".into();
        let text = k.to_string();
        assert!(text.contains("(x[i0 * 3 + i1] + x@1[i1])"), "{text}");
        round_trip(&k);
    }

    const MAP: &str = "\
kernel k0_add map [batch, 4] (x: f32[batch, 4] r, bias: f32[4] r, y: f32[batch, 4] w) {
  y[i0 * 4 + i1] = (x[i0 * 4 + i1] + bias[i1])
}
";

    #[test]
    fn reads_a_map_and_prints_it_back_the_same() {
        let k = parse_kernel(MAP).expect("parses");
        assert_eq!(k.name, "k0_add");
        assert_eq!(k.buffers.len(), 3);
        let KernelBody::Map { space, stores } = &k.body else {
            panic!("a map: {k:?}");
        };
        assert_eq!(space, &[Dim::Batch, Dim::Fixed(4)]);
        assert_eq!(stores.len(), 1);
        assert_eq!(stores[0].buf, 2);
        assert_eq!(k.to_string(), MAP);
    }

    #[test]
    fn reads_several_kernels_between_comments_and_blank_lines() {
        let text = format!(
            "# two kernels\n\n{MAP}\n{}",
            MAP.replace("k0_add", "k1_add")
        );
        let kernels = parse_kernels(&text).expect("parses");
        let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["k0_add", "k1_add"]);
        let err = parse_kernel(&text).expect_err("two kernels are not one");
        assert!(err.message.contains("found 2"), "{err}");
    }

    /// The error for `text`, which must not parse.
    fn error(text: &str) -> ParseError {
        match parse_kernels(text) {
            Ok(k) => panic!("parsed: {k:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_load_of_an_undeclared_buffer_is_an_error_on_its_line() {
        let e = error(&MAP.replace("bias[i1]", "bias2[i1]"));
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("`bias2` is not a buffer"), "{e}");
    }

    #[test]
    fn a_missing_closing_brace_is_reported_at_the_end() {
        let e = error(MAP.trim_end().trim_end_matches('}'));
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("closing kernel `k0_add`"), "{e}");
    }

    #[test]
    fn bad_headers_are_errors_on_the_first_line() {
        for (header, want) in [
            ("kernel k0 map [batch, 4] x: f32[4] r {", "`( … )`"),
            ("kernel k0 loop [4] (x: f32[4] r) {", "found `loop`"),
            ("kernel k0 map [4] (x: f64[4] r) {", "element type `f64`"),
            ("kernel k0 map [4] (x: f32[4] q) {", "found `q`"),
            (
                "kernel k0 map [4] (x: f32[4] r, x: f32[4] w) {",
                "declared twice",
            ),
            ("kernel k0 map [four] (x: f32[4] r) {", "dimension"),
            ("graph k0 {", "expected `kernel NAME"),
        ] {
            let e = error(&format!("\n{header}\n}}\n"));
            assert_eq!(e.line, 2, "{header}: {e}");
            assert!(e.message.contains(want), "{header}: {e}");
        }
    }

    #[test]
    fn bad_expressions_are_errors_on_their_line() {
        for (store, want) in [
            ("y[i0] = frob(x[i0])", "unknown function `frob`"),
            ("y[i0] = (x[i0] ? x[i0])", "binary operator"),
            ("y[i0] = x[(i0) / 0]", "positive"),
            ("y[i0] = x[i0 + ]", "expected an index"),
            ("y[i0] = max(x[i0 * 4 + i5] for i5 < 4)", "is `i2`"),
            ("y[i0] = (x[i0] + 1.0", "expected `)`"),
            ("y[i0] = x[i0] x", "unexpected `x`"),
            ("y[i0]", "expected `=`"),
        ] {
            let text = format!(
                "kernel k map [batch, 4] (x: f32[batch, 4] r, y: f32[batch, 4] w) {{\n  \
                 y[i0] = 0.0\n  {store}\n}}\n"
            );
            let e = error(&text);
            assert_eq!(e.line, 3, "{store}: {e}");
            assert!(e.message.contains(want), "{store}: {e}");
        }
    }

    #[test]
    fn a_contraction_needs_its_four_lines_in_order() {
        let text = test_fixtures::dense_relu().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let swapped = [lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]].join("\n");
        let e = error(&swapped);
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("expected `a`"), "{e}");
    }

    /// Any prefix of a kernel's text, and the text with any one character removed, parses
    /// or gives an error: never a panic.
    #[test]
    fn damaged_text_never_panics() {
        let text = every_construct().to_string();
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for &i in &boundaries {
            let _ = parse_kernels(&text[..i]);
            let c = text[i..].chars().next().map_or(0, char::len_utf8);
            let damaged = format!("{}{}", &text[..i], &text[i + c..]);
            let _ = parse_kernels(&damaged);
        }
    }
}
