//! A readable text form of the kernel IR, for `strata ir --stage kernels` and snapshots;
//! [`crate::parse`] reads it back (`parse(print(k)) == k`), so the text holds everything a
//! [`Kernel`] holds and never reads two ways.
//!
//! ```text
//! kernel k3_add map [batch, 128] (t2: f32[batch, 128] r, dense0_bias: f32[128] r, t3: f32[batch, 128] w) {
//!   t3[i0 * 128 + i1] = (t2[i0 * 128 + i1] + dense0_bias[i1])
//! }
//! ```

use crate::ir::*;
use std::fmt::{self, Display, Formatter};

fn dims(d: &[Dim]) -> String {
    let parts: Vec<String> = d.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

struct IndexText<'a>(&'a Index);

/// An index expression as the kernel text writes it (`i0 * 128 + i1`).
pub fn index_text(ix: &Index) -> String {
    IndexText(ix).to_string()
}

impl Display for IndexText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // `+` and `*` read left to right, so a right operand of the same operation (and an
        // addition inside a product) is parenthesized: the text is then the one tree.
        let wrapped = |x: &Index, wrap: bool| {
            if wrap {
                format!("({})", IndexText(x))
            } else {
                IndexText(x).to_string()
            }
        };
        match self.0 {
            Index::Var(v) => write!(f, "i{v}"),
            Index::Const(c) => write!(f, "{c}"),
            Index::Batch => f.write_str("batch"),
            Index::Add(a, b) => write!(
                f,
                "{} + {}",
                IndexText(a),
                wrapped(b, matches!(**b, Index::Add(..)))
            ),
            Index::Mul(a, b) => write!(
                f,
                "{} * {}",
                wrapped(a, matches!(**a, Index::Add(..))),
                wrapped(b, matches!(**b, Index::Add(..) | Index::Mul(..)))
            ),
            Index::Div(a, d) => write!(f, "({}) / {d}", IndexText(a)),
            Index::Rem(a, d) => write!(f, "({}) % {d}", IndexText(a)),
        }
    }
}

/// How a binary op is written: an infix symbol (`(a + b)`) or a function name
/// (`max(a, b)`).
pub(crate) fn binary_text(op: BinaryOp) -> BinaryText {
    match op {
        BinaryOp::Add => BinaryText::Infix("+"),
        BinaryOp::Sub => BinaryText::Infix("-"),
        BinaryOp::Mul => BinaryText::Infix("*"),
        BinaryOp::Div => BinaryText::Infix("/"),
        BinaryOp::Lt => BinaryText::Infix("<"),
        BinaryOp::Le => BinaryText::Infix("<="),
        BinaryOp::Gt => BinaryText::Infix(">"),
        BinaryOp::Ge => BinaryText::Infix(">="),
        BinaryOp::Eq => BinaryText::Infix("=="),
        BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow => BinaryText::Function(op.name()),
    }
}

/// See [`binary_text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryText {
    Infix(&'static str),
    Function(&'static str),
}

/// The name each buffer slot is written with: its own, or `name@slot` when an earlier
/// slot has the same name (a scan body's temporary and a constant of the enclosing graph
/// may share one), so a load always names one slot.
pub(crate) fn slot_names(buffers: &[BufferDecl]) -> Vec<String> {
    buffers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if buffers[..i].iter().any(|other| other.name == b.name) {
                format!("{}@{i}", b.name)
            } else {
                b.name.clone()
            }
        })
        .collect()
}

struct ExprText<'a> {
    expr: &'a Expr,
    /// The slots' names, from [`slot_names`].
    names: &'a [String],
    /// Loop variables in scope: a nested reduction names its own from here.
    scope: usize,
}

impl<'a> Display for ExprText<'a> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let sub = |e: &'a Expr| ExprText {
            expr: e,
            names: self.names,
            scope: self.scope,
        };
        match self.expr {
            Expr::Load { buf, index } => {
                let name = self.names.get(*buf).map_or("?", String::as_str);
                write!(f, "{name}[{}]", IndexText(index))
            }
            // `gather(table, ids[i0], i1)`: row `ids[i0]`, column `i1`.
            Expr::Gather {
                table,
                ids,
                id_index,
                col,
            } => {
                let name = |b: usize| self.names.get(b).map_or("?", String::as_str);
                write!(
                    f,
                    "gather({}, {}[{}], {})",
                    name(*table),
                    name(*ids),
                    IndexText(id_index),
                    IndexText(col)
                )
            }
            Expr::Const(c) => write!(f, "{c:?}"),
            Expr::Acc => f.write_str("acc"),
            Expr::IndexValue(i) => write!(f, "float({})", IndexText(i)),
            Expr::Unary(op, x) => write!(f, "{}({})", op.name(), sub(x)),
            Expr::Binary(op, a, b) => match binary_text(*op) {
                BinaryText::Infix(sym) => write!(f, "({} {sym} {})", sub(a), sub(b)),
                BinaryText::Function(name) => write!(f, "{name}({}, {})", sub(a), sub(b)),
            },
            Expr::Select {
                cond,
                then,
                otherwise,
            } => write!(
                f,
                "select({}, {}, {})",
                sub(cond),
                sub(then),
                sub(otherwise)
            ),
            Expr::Uniform { seed, index, step } => write!(
                f,
                "uniform(seed={seed}, {}, step={})",
                IndexText(index),
                sub(step)
            ),
            // `max(x[i0 * 10 + i2] for i2 < 10)`
            Expr::Reduce { op, extent, value } => {
                let value = ExprText {
                    expr: value,
                    names: self.names,
                    scope: self.scope + extent.len(),
                };
                let bounds: Vec<String> = extent
                    .iter()
                    .enumerate()
                    .map(|(i, d)| format!("i{} < {d}", self.scope + i))
                    .collect();
                write!(f, "{}({value} for {})", op.name(), bounds.join(", "))
            }
        }
    }
}

impl Display for Kernel {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let names = slot_names(&self.buffers);
        let params: Vec<String> = self
            .buffers
            .iter()
            .zip(&names)
            .map(|(b, name)| {
                let access = match b.access {
                    Access::Read => "r",
                    Access::Write => "w",
                    Access::ReadWrite => "rw",
                };
                let ty = match b.dtype {
                    ScalarType::F32 => "f32",
                    ScalarType::I32 => "i32",
                };
                format!("{name}: {ty}{} {access}", dims(&b.shape))
            })
            .collect();
        let e = |x: &'_ Expr, scope: usize| {
            ExprText {
                expr: x,
                names: &names,
                scope,
            }
            .to_string()
        };
        let name = |b: usize| names.get(b).map_or("?", String::as_str);
        let body_text = |body: &KernelBody, pad: &str| -> (String, Vec<String>) {
            match body {
                KernelBody::Map { space, stores } => (
                    format!("map {}", dims(space)),
                    stores
                        .iter()
                        .map(|s| {
                            format!(
                                "{pad}{}[{}] = {}",
                                name(s.buf),
                                IndexText(&s.index),
                                e(&s.value, space.len())
                            )
                        })
                        .collect(),
                ),
                KernelBody::Reduce {
                    space,
                    reduce,
                    op,
                    value,
                    out,
                } => (
                    format!("reduce {} over {}", dims(space), dims(reduce)),
                    vec![
                        format!(
                            "{pad}acc = {}({})",
                            op.name(),
                            e(value, space.len() + reduce.len())
                        ),
                        format!(
                            "{pad}{}[{}] = {}",
                            name(out.buf),
                            IndexText(&out.index),
                            e(&out.value, space.len())
                        ),
                    ],
                ),
                KernelBody::Contract(c) => {
                    // `a`, `b`, then each term's `a1`, `b1`, `a2`, ...
                    let labels: Vec<(String, &MatrixOperand)> = c
                        .products()
                        .enumerate()
                        .flat_map(|(t, (_, a, b))| {
                            let t = if t == 0 { String::new() } else { t.to_string() };
                            [(format!("a{t}"), a), (format!("b{t}"), b)]
                        })
                        .collect();
                    let mut lines: Vec<String> = labels
                        .iter()
                        .map(|(label, op)| match op.window.as_deref() {
                            Some(w) => format!(
                                "{pad}{label} = {}[{} + {}]",
                                name(op.buf),
                                IndexText(&op.offset),
                                window_text(w)
                            ),
                            None => format!(
                                "{pad}{label} = {}[{} + row * {} + col * {}]",
                                name(op.buf),
                                IndexText(&op.offset),
                                IndexText(&op.row_stride),
                                IndexText(&op.col_stride)
                            ),
                        })
                        .collect();
                    lines.push(format!("{pad}acc = {}", product_sum(c.terms.len())));
                    lines.push(format!(
                        "{pad}{}[row-major] = {}",
                        name(c.out),
                        e(&c.epilogue, c.space().len())
                    ));
                    (
                        format!(
                            "contract batch {}{} m {} n {} k {}{}",
                            dims(&c.batch),
                            if c.summed.is_empty() {
                                String::new()
                            } else {
                                format!(" sum {}", dims(&c.summed))
                            },
                            c.m,
                            c.n,
                            c.k,
                            if c.terms.is_empty() {
                                String::new()
                            } else {
                                let depths: Vec<Dim> = c.terms.iter().map(|t| t.k).collect();
                                format!(" terms {}", dims(&depths))
                            }
                        ),
                        lines,
                    )
                }
                // `table[ids[i0], i1] += g[i0 * 16 + i1]`: the column is the last variable.
                KernelBody::ScatterAdd(s) => (
                    format!("scatter_add over {}", dims(&s.over)),
                    vec![format!(
                        "{pad}{}[{}[{}], i{}] += {}",
                        name(s.out),
                        name(s.ids),
                        IndexText(&s.id_index),
                        s.over.len(),
                        e(&s.value, s.over.len() + 1)
                    )],
                ),
                KernelBody::Parts(parts) => (format!("parts {}", parts.len()), Vec::new()),
            }
        };
        let (kind, lines) = body_text(&self.body, "  ");
        writeln!(f, "kernel {} {kind} ({}) {{", self.name, params.join(", "))?;
        for line in lines {
            writeln!(f, "{line}")?;
        }
        if let KernelBody::Parts(parts) = &self.body {
            for (i, part) in parts.iter().enumerate() {
                let (kind, lines) = body_text(part, "    ");
                writeln!(f, "  part {i} {kind} {{")?;
                for line in lines {
                    writeln!(f, "{line}")?;
                }
                writeln!(f, "  }}")?;
            }
        }
        f.write_str("}\n")
    }
}

/// `window C x H x W kernel KH x KW stride S padding P dilation D`: a window operand's
/// addressing, as the parser reads it back.
pub fn window_text(w: &ImageWindow) -> String {
    format!(
        "window {} x {} x {} kernel {} x {} stride {} padding {} dilation {}",
        w.channels, w.height, w.width, w.kh, w.kw, w.stride, w.padding, w.dilation
    )
}

/// A contraction's sum of products as printed: `sum_k a[m, k] * b[k, n]`, then
/// ` + sum_k a1[m, k] * b1[k, n]` per term.
pub fn product_sum(terms: usize) -> String {
    let mut text = "sum_k a[m, k] * b[k, n]".to_string();
    for t in 1..=terms {
        text += &format!(" + sum_k a{t}[m, k] * b{t}[k, n]");
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nested_reduction_names_its_variables_after_the_enclosing_ones() {
        let text = crate::test_fixtures::nested_softmax().to_string();
        assert!(
            text.contains(
                "sum(exp((x[i0 * 10 + i2] - max(x[i0 * 10 + i3] for i3 < 10))) for i2 < 10)"
            ),
            "{text}"
        );
    }
}
