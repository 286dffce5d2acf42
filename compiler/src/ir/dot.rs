//! Graphviz DOT output of the graph IR.

use super::graph::Graph;
use super::op::Op;
use super::print::{op_text, value_name};
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as a DOT digraph: one box per value (name, op, type), inputs and outputs
/// highlighted, edges labelled with operand positions when an op has several.
pub fn graph_to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    out.push_str("  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    for v in graph.topo_order() {
        let node = graph.node(v);
        let style = match node.op {
            Op::Input { .. } => ", style=filled, fillcolor=\"#cfe8ff\"",
            Op::Param { .. } => ", style=filled, fillcolor=\"#eeeeee\"",
            Op::MatMul => ", style=filled, fillcolor=\"#ffe2b8\"",
            _ => "",
        };
        let label = format!(
            "{} = {}\\n{}",
            value_name(graph, v),
            op_text(&node.op),
            node.ty
        );
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\"{style}];",
            v.index(),
            escape(&label).replace("\\\\n", "\\n")
        );
        let operands = graph.operands(v);
        for (pos, o) in operands.iter().enumerate() {
            if operands.len() > 1 {
                let _ = writeln!(out, "  n{} -> n{} [label=\"{pos}\"];", o.index(), v.index());
            } else {
                let _ = writeln!(out, "  n{} -> n{};", o.index(), v.index());
            }
        }
    }
    for (i, (name, v)) in graph.outputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{i} [label=\"output {}\", shape=oval, style=filled, fillcolor=\"#c8f0c8\"];\n  n{} -> out{i};",
            escape(name),
            v.index()
        );
    }
    out.push_str("}\n");
    out
}
