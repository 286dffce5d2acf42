//! A parser for the text form [`print_graph`](super::print::print_graph) writes, so a
//! pass test reads `before.ir`, runs the pass and compares with `after.ir`.
//!
//! The format is line-oriented: a `graph NAME {` header, one value a line
//! (`NAME : TYPE = OP ATTRS OPERANDS`), then `output` and `update` lines and a closing
//! `}`. `#` starts a comment (the printer's source locations) that runs to the end of
//! the line.
//!
//! Round trip: `print(parse(print(g))) == print(g)`. The printer names values by node
//! index and lists them in a topological order with ties broken by index, so the parser
//! rebuilds the graph with every `%N` at index `N`, and gives each named leaf (`%input`,
//! `@param`) the smallest free index above every value printed before it, which keeps the
//! printed order (see [`leaf_indices`]).

use super::graph::{Graph, ValueId};
use super::op::{BinaryOp, ConvWindow, Init, Op, ReduceOp, UnaryOp};
use super::types::{DType, Dim, Shape, TensorType};
use crate::source::Span;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Why the text is not a graph, with the 1-based line it was found on.
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

/// How a value is named in the text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ValueName {
    /// `%N`: the node with index `N`.
    Numbered(usize),
    /// `%name`: an input.
    Input(String),
    /// `@path`: a parameter.
    Param(String),
}

impl ValueName {
    fn parse(s: &str) -> Result<ValueName, String> {
        if let Some(rest) = s.strip_prefix('%') {
            if rest.is_empty() {
                return Err("`%` without a name".into());
            }
            if rest.bytes().all(|b| b.is_ascii_digit()) {
                return rest
                    .parse()
                    .map(ValueName::Numbered)
                    .map_err(|e| format!("bad value number `{s}`: {e}"));
            }
            Ok(ValueName::Input(rest.to_string()))
        } else if let Some(rest) = s.strip_prefix('@') {
            if rest.is_empty() {
                return Err("`@` without a path".into());
            }
            Ok(ValueName::Param(rest.to_string()))
        } else {
            Err(format!(
                "expected a value (`%N`, `%input` or `@param`), found `{s}`"
            ))
        }
    }
}

impl fmt::Display for ValueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueName::Numbered(n) => write!(f, "%{n}"),
            ValueName::Input(name) => write!(f, "%{name}"),
            ValueName::Param(path) => write!(f, "@{path}"),
        }
    }
}

/// One value line, parsed but not yet added to the graph.
struct ValueLine {
    line: usize,
    name: ValueName,
    ty: TensorType,
    op: Op,
    operands: Vec<ValueName>,
}

/// Parses the text form of one graph.
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, strip_comment(l).trim()))
        .filter(|(_, l)| !l.is_empty());
    let err = |line: usize, message: String| ParseError { line, message };

    let (first, header) = lines
        .next()
        .ok_or_else(|| err(1, "empty input: expected `graph NAME {`".into()))?;
    let name = header
        .strip_prefix("graph ")
        .and_then(|r| r.strip_suffix('{'))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err(first, format!("expected `graph NAME {{`, found `{header}`")))?;

    let mut values: Vec<ValueLine> = Vec::new();
    let mut outputs: Vec<(usize, String, ValueName)> = Vec::new();
    let mut updates: Vec<(usize, ValueName, ValueName)> = Vec::new();
    let mut closed = false;
    while let Some((line, text)) = lines.next() {
        if text == "}" {
            closed = true;
            break;
        }
        if let Some(rest) = text.strip_prefix("output ") {
            let (out, v) = rest
                .split_once(" = ")
                .ok_or_else(|| err(line, "expected `output NAME = VALUE`".into()))?;
            let v = ValueName::parse(v.trim()).map_err(|e| err(line, e))?;
            outputs.push((line, out.trim().to_string(), v));
        } else if let Some(rest) = text.strip_prefix("update ") {
            let (p, v) = rest
                .split_once(" = ")
                .ok_or_else(|| err(line, "expected `update @PARAM = VALUE`".into()))?;
            let p = ValueName::parse(p.trim()).map_err(|e| err(line, e))?;
            let v = ValueName::parse(v.trim()).map_err(|e| err(line, e))?;
            updates.push((line, p, v));
        } else if let Some(head) = text.strip_suffix('{') {
            // A scan: its body graph follows, up to the matching `}`.
            let mut depth = 1;
            let mut body = Vec::new();
            for (_, inner) in lines.by_ref() {
                if inner == "}" {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                } else if inner.ends_with('{') {
                    depth += 1;
                }
                body.push(inner);
            }
            if depth != 0 {
                return Err(err(line, "the scan body is not closed by `}`".into()));
            }
            let body = parse_graph(&body.join("\n")).map_err(|e| ParseError {
                line: line + e.line,
                message: format!("in the scan body: {}", e.message),
            })?;
            values.push(
                parse_value_line(head.trim_end(), Some(body)).map_err(|e| err(line, e))?(line)
            );
        } else {
            values.push(parse_value_line(text, None).map_err(|e| err(line, e))?(
                line,
            ));
        }
    }
    if !closed {
        return Err(err(
            text.lines().count().max(1),
            "missing the closing `}`".into(),
        ));
    }
    if let Some((line, extra)) = lines.next() {
        return Err(err(
            line,
            format!("unexpected `{extra}` after the closing `}}`"),
        ));
    }

    build(name, &values, &outputs, &updates)
}

/// The line without its `#` comment.
fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(l, _)| l)
}

/// `NAME : TYPE = OP ATTRS OPERANDS`; the line number is filled in by the caller.
fn parse_value_line(
    text: &str,
    body: Option<Graph>,
) -> Result<impl FnOnce(usize) -> ValueLine, String> {
    let (name, rest) = text
        .split_once(" : ")
        .ok_or("expected `NAME : TYPE = OP …`, `output …`, `update …` or `}`")?;
    let name = ValueName::parse(name.trim())?;
    let (ty, rest) = rest
        .split_once(" = ")
        .ok_or("expected ` = ` after the type")?;
    let ty = parse_type(ty.trim())?;
    // Attributes never hold `%` or `@`: the first one starts the operands.
    let (op_text, operands_text) = match rest.find(['%', '@']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let operands = if operands_text.trim().is_empty() {
        Vec::new()
    } else {
        operands_text
            .split(',')
            .map(|o| ValueName::parse(o.trim()))
            .collect::<Result<_, _>>()?
    };
    let op = parse_op(op_text.trim(), &name, body)?;
    Ok(move |line| ValueLine {
        line,
        name,
        ty,
        op,
        operands,
    })
}

/// `f32[batch, 64]`, `i32[]`.
fn parse_type(s: &str) -> Result<TensorType, String> {
    let i = s
        .find('[')
        .ok_or_else(|| format!("expected a type like `f32[4]`, found `{s}`"))?;
    let dtype =
        DType::parse(&s[..i]).ok_or_else(|| format!("unknown element type `{}`", &s[..i]))?;
    let mut cursor = Cursor(&s[i..]);
    let shape = cursor.shape()?;
    cursor.end()?;
    Ok(TensorType { dtype, shape })
}

/// The op and its attributes (`reduce_sum axes=[1] keep_dims`).
fn parse_op(text: &str, name: &ValueName, body: Option<Graph>) -> Result<Op, String> {
    let (mnemonic, attrs) = text.split_once(' ').unwrap_or((text, ""));
    let mut c = Cursor(attrs.trim());
    if body.is_some() != (mnemonic == "scan") {
        return Err("a body `{ … }` goes with `scan` and only with it".into());
    }
    let op = match mnemonic {
        "scan" => {
            let sequences = c.attr("sequences=")? as usize;
            c.expect("keep=")?;
            let keep_all = if c.eat("all") {
                true
            } else if c.eat("last") {
                false
            } else {
                return Err("expected `keep=all` or `keep=last`".into());
            };
            let reverse = if c.eat("reverse") {
                true
            } else if c.eat("forward") {
                false
            } else {
                return Err("expected `forward` or `reverse`".into());
            };
            Op::Scan(Box::new(crate::ir::Scan {
                body: body.unwrap_or_default(),
                sequences,
                reverse,
                keep_all,
            }))
        }
        "input" => match name {
            ValueName::Input(n) => Op::Input { name: n.clone() },
            _ => return Err("an `input` must be named `%name`".into()),
        },
        "param" => match name {
            ValueName::Param(path) => Op::Param {
                path: path.clone(),
                init: parse_init(c.rest())?,
            },
            _ => return Err("a `param` must be named `@path`".into()),
        },
        "const" => Op::Const {
            value: c
                .rest()
                .parse()
                .map_err(|e| format!("bad constant `{}`: {e}", attrs.trim()))?,
        },
        "matmul" => Op::MatMul,
        "gather" => Op::Gather,
        "scatter_add" => Op::ScatterAdd {
            rows: c.attr("rows=")?,
        },
        "stop_gradient" => Op::StopGradient,
        reduce if let Some(op) = reduce.strip_prefix("reduce_").and_then(ReduceOp::from_name) => {
            c.expect("axes=")?;
            let axes = c.list()?;
            let keep_dims = c.eat("keep_dims");
            Op::Reduce {
                op,
                axes,
                keep_dims,
            }
        }
        "reshape" => Op::Reshape { shape: c.shape()? },
        "transpose" => {
            c.expect("perm=")?;
            Op::Transpose { perm: c.list()? }
        }
        "concat" => Op::Concat {
            axis: c.attr("axis=")? as usize,
        },
        "slice" => Op::Slice {
            axis: c.attr("axis=")? as usize,
            start: c.attr("start=")?,
            len: c.attr("len=")?,
        },
        "broadcast" => Op::Broadcast { shape: c.shape()? },
        "one_hot" => Op::OneHot {
            classes: c.attr("classes=")?,
        },
        "cast" => {
            c.expect("to=")?;
            let to = c.rest();
            Op::Cast {
                to: DType::parse(to).ok_or_else(|| format!("unknown element type `{to}`"))?,
            }
        }
        "random_uniform" => Op::RandomUniform {
            seed: c.attr("seed=")?,
            shape: c.shape()?,
        },
        "im2col" => Op::Im2Col {
            window: c.window()?,
        },
        "col2im" => {
            let window = c.window()?;
            c.expect("image=")?;
            let image = c.items(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("expected an extent, found `{s}`"))
            })?;
            let [channels, height, width] = image[..] else {
                return Err("`image=` takes [channels, height, width]".into());
            };
            Op::Col2Im {
                window,
                channels,
                height,
                width,
            }
        }
        other => {
            if let Some(u) = UnaryOp::from_name(other) {
                Op::Unary(u)
            } else if let Some(b) = BinaryOp::from_name(other) {
                Op::Binary(b)
            } else {
                return Err(format!("unknown op `{other}`"));
            }
        }
    };
    if !matches!(op, Op::Param { .. } | Op::Const { .. }) {
        c.end()?;
    }
    Ok(op)
}

/// `zeros`, `he_uniform`, `constant(0.5)`, `uniform(0.1)`, `normal(0.02)`.
fn parse_init(s: &str) -> Result<Init, String> {
    if let Some(init) = Init::parse(s) {
        return Ok(init);
    }
    let (kind, arg) = s
        .strip_suffix(')')
        .and_then(|r| r.split_once('('))
        .ok_or_else(|| format!("unknown initializer `{s}`"))?;
    let x: f64 = arg
        .parse()
        .map_err(|e| format!("bad initializer argument `{arg}`: {e}"))?;
    match kind {
        "constant" => Ok(Init::Constant(x)),
        "uniform" => Ok(Init::Uniform(x)),
        "normal" => Ok(Init::Normal(x)),
        _ => Err(format!("unknown initializer `{s}`")),
    }
}

/// A scanner over an op's attribute text.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        self.0 = self.0.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.0.strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}`, found `{}`", self.0))
        }
    }

    fn rest(&mut self) -> &'a str {
        let rest = self.0.trim();
        self.0 = "";
        rest
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.0))
        }
    }

    fn number(&mut self) -> Result<u64, String> {
        self.skip_ws();
        let end = self
            .0
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.0.len());
        let (digits, rest) = self.0.split_at(end);
        let n = digits
            .parse()
            .map_err(|_| format!("expected a number, found `{}`", self.0))?;
        self.0 = rest;
        Ok(n)
    }

    /// `key=N`.
    fn attr(&mut self, key: &str) -> Result<u64, String> {
        self.expect(key)?;
        self.number()
    }

    /// Bracketed, comma-separated items: `[1, 2]`, `[batch, 4]`, `[]`.
    fn items<T>(
        &mut self,
        mut item: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.expect("[")?;
        let close = self.0.find(']').ok_or("missing `]`")?;
        let inner = &self.0[..close];
        self.0 = &self.0[close + 1..];
        if inner.trim().is_empty() {
            return Ok(Vec::new());
        }
        inner.split(',').map(|s| item(s.trim())).collect()
    }

    /// `kernel=[kh, kw] stride=S padding=P dilation=D`.
    fn window(&mut self) -> Result<ConvWindow, String> {
        self.expect("kernel=")?;
        let kernel = self.items(|s| {
            s.parse::<u64>()
                .map_err(|_| format!("expected an extent, found `{s}`"))
        })?;
        let [kh, kw] = kernel[..] else {
            return Err("`kernel=` takes [kh, kw]".into());
        };
        Ok(ConvWindow {
            kh,
            kw,
            stride: self.attr("stride=")?,
            padding: self.attr("padding=")?,
            dilation: self.attr("dilation=")?,
        })
    }

    fn list(&mut self) -> Result<Vec<usize>, String> {
        self.items(|s| {
            s.parse()
                .map_err(|_| format!("expected an index, found `{s}`"))
        })
    }

    fn shape(&mut self) -> Result<Shape, String> {
        self.items(|s| match s {
            "batch" => Ok(Dim::Batch),
            _ => s
                .parse()
                .map(Dim::Fixed)
                .map_err(|_| format!("expected a dimension, found `{s}`")),
        })
        .map(Shape)
    }
}

/// The node index of each value line: `%N` keeps `N`; a named leaf takes the smallest
/// index that is free and above every index printed before it. The printer chose the
/// line order as "smallest ready index first", so the leaf's original index lay in that
/// range; the smallest free one there keeps every later choice the same.
fn leaf_indices(values: &[ValueLine]) -> Vec<usize> {
    let numbered: BTreeSet<usize> = values
        .iter()
        .filter_map(|v| match v.name {
            ValueName::Numbered(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut taken = numbered;
    let mut max_before: Option<usize> = None;
    let mut indices = Vec::with_capacity(values.len());
    for v in values {
        let index = match v.name {
            ValueName::Numbered(n) => n,
            _ => {
                let mut i = max_before.map_or(0, |m| m + 1);
                while taken.contains(&i) {
                    i += 1;
                }
                taken.insert(i);
                i
            }
        };
        max_before = Some(max_before.map_or(index, |m| m.max(index)));
        indices.push(index);
    }
    indices
}

/// Adds the values at their indices: every index up to the largest is first held by a
/// placeholder; each value frees its placeholder's slot just before it is added, and the
/// graph's storage (a petgraph `StableGraph`) reuses the slot freed last.
fn build(
    name: &str,
    values: &[ValueLine],
    outputs: &[(usize, String, ValueName)],
    updates: &[(usize, ValueName, ValueName)],
) -> Result<Graph, ParseError> {
    let indices = leaf_indices(values);
    let mut graph = Graph::new(name);
    let placeholder = Op::Const { value: 0.0 };
    let count = indices.iter().max().map_or(0, |m| m + 1);
    let mut placeholders = Vec::with_capacity(count);
    for _ in 0..count {
        let p = graph
            .add(placeholder.clone(), &[], Span::default())
            .map_err(|e| ParseError {
                line: 1,
                message: e,
            })?;
        placeholders.push(Some(p));
    }
    let mut ids: HashMap<&ValueName, ValueId> = HashMap::new();
    for (v, &index) in values.iter().zip(&indices) {
        let err = |message: String| ParseError {
            line: v.line,
            message,
        };
        if ids.contains_key(&v.name) {
            return Err(err(format!("{} is defined twice", v.name)));
        }
        let operands: Vec<ValueId> = v
            .operands
            .iter()
            .map(|o| {
                ids.get(o)
                    .copied()
                    .ok_or_else(|| err(format!("{o} is used before it is defined")))
            })
            .collect::<Result<_, _>>()?;
        let slot = placeholders[index]
            .take()
            .ok_or_else(|| err(format!("{} is defined twice", v.name)))?;
        graph.remove(slot);
        let id = match v.op {
            Op::Input { .. } | Op::Param { .. } => {
                if !operands.is_empty() {
                    return Err(err("a leaf takes no operands".into()));
                }
                graph.add_leaf(v.op.clone(), v.ty.clone(), Span::default())
            }
            _ => {
                let id = graph
                    .add(v.op.clone(), &operands, Span::default())
                    .map_err(&err)?;
                if *graph.ty(id) != v.ty {
                    return Err(err(format!(
                        "the type is written {} but the operands give {}",
                        v.ty,
                        graph.ty(id)
                    )));
                }
                id
            }
        };
        if id.index() != index {
            return Err(err(format!(
                "internal: {} landed at index {}",
                v.name,
                id.index()
            )));
        }
        ids.insert(&v.name, id);
    }
    for p in placeholders.into_iter().flatten() {
        graph.remove(p);
    }
    let lookup = |line: usize, v: &ValueName| {
        ids.get(v).copied().ok_or_else(|| ParseError {
            line,
            message: format!("{v} is not defined"),
        })
    };
    for (line, out, v) in outputs {
        graph.outputs.push((out.clone(), lookup(*line, v)?));
    }
    for (line, p, v) in updates {
        graph.updates.push((lookup(*line, p)?, lookup(*line, v)?));
    }
    Ok(graph)
}
