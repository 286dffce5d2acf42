//! The text form of the graph IR: SSA-like, one value a line, stable for snapshots.
//!
//! ```text
//! graph Mlp {
//!   %x : f32[batch, 64] = input                       # mlp.strata:2:11
//!   @dense0.w : f32[128, 64] = param xavier_uniform    # mlp.strata:3:14
//!   %4 : f32[batch, 128] = matmul %x, %3               # mlp.strata:3:14
//!   output logits = %9
//! }
//! ```
//! Inputs print as `%name`, parameters as `@path`, every other value as `%N` (its node
//! index). Values are listed in a topological order with ties broken by id.

use super::graph::{Graph, ValueId};
use super::op::Op;
use crate::source::SourceFile;
use crate::source::Span;
use std::fmt::Write;

/// How a value is referred to in the text form.
pub fn value_name(graph: &Graph, v: ValueId) -> String {
    match &graph.node(v).op {
        Op::Input { name } => format!("%{name}"),
        Op::Param { path, .. } => format!("@{path}"),
        _ => v.to_string(),
    }
}

/// The op and its attributes, without operands: `reduce_sum axes=[1] keep_dims`.
pub fn op_text(op: &Op) -> String {
    match op {
        Op::Input { .. } => "input".into(),
        Op::Param { init, .. } => format!("param {init}"),
        Op::Const { value } => format!("const {}", fmt_f64(*value)),
        Op::Reduce {
            axes, keep_dims, ..
        } => format!(
            "{} axes={axes:?}{}",
            op.mnemonic(),
            if *keep_dims { " keep_dims" } else { "" }
        ),
        Op::Reshape { shape } => format!("reshape {shape}"),
        Op::Transpose { perm } => format!("transpose perm={perm:?}"),
        Op::Concat { axis } => format!("concat axis={axis}"),
        Op::Slice { axis, start, len } => format!("slice axis={axis} start={start} len={len}"),
        Op::Broadcast { shape } => format!("broadcast {shape}"),
        Op::OneHot { classes } => format!("one_hot classes={classes}"),
        Op::ScatterAdd { rows } => format!("scatter_add rows={rows}"),
        Op::Cast { to } => format!("cast to={to}"),
        Op::RandomUniform { seed, shape } => format!("random_uniform seed={seed} {shape}"),
        Op::Im2Col { window } => format!("im2col {window}"),
        Op::Scan(scan) => format!("scan {}", scan.attributes()),
        Op::Col2Im {
            window,
            channels,
            height,
            width,
        } => format!("col2im {window} image=[{channels}, {height}, {width}]"),
        _ => op.mnemonic().into(),
    }
}

/// A float that reads back exactly (Rust's shortest round-trip form).
pub fn fmt_f64(x: f64) -> String {
    let s = format!("{x:?}");
    s
}

/// `file:line:col` of a span's start.
pub fn location(source: &SourceFile, span: Span) -> String {
    let (line, col) = source.line_col(span.start as usize);
    format!("{}:{line}:{col}", source.name)
}

/// The whole graph as text. With a source, each line ends with its source location.
pub fn print_graph(graph: &Graph, source: Option<&SourceFile>) -> String {
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    for v in graph.topo_order() {
        let node = graph.node(v);
        let operands: Vec<String> = graph
            .operands(v)
            .into_iter()
            .map(|o| value_name(graph, o))
            .collect();
        let mut text = format!(
            "{} : {} = {}",
            value_name(graph, v),
            node.ty,
            op_text(&node.op)
        );
        if !operands.is_empty() {
            text.push(' ');
            text.push_str(&operands.join(", "));
        }
        let loc = source.map(|s| location(s, node.span));
        if let Op::Scan(scan) = &node.op {
            // The body follows in braces, one level deeper.
            text.push_str(" {");
            lines.push((text, loc));
            for line in print_graph(&scan.body, source).lines() {
                lines.push((format!("  {line}"), None));
            }
            lines.push(("}".into(), None));
            continue;
        }
        lines.push((text, loc));
    }
    let width = lines.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", graph.name);
    for (text, loc) in lines {
        match loc {
            Some(loc) => {
                let _ = writeln!(out, "  {text:width$}  # {loc}");
            }
            None => {
                let _ = writeln!(out, "  {text}");
            }
        }
    }
    for (name, v) in &graph.outputs {
        let _ = writeln!(out, "  output {name} = {}", value_name(graph, *v));
    }
    for (param, new) in &graph.updates {
        let _ = writeln!(
            out,
            "  update {} = {}",
            value_name(graph, *param),
            value_name(graph, *new)
        );
    }
    out.push_str("}\n");
    out
}
