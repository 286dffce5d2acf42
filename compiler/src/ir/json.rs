//! The JSON form of a graph (`strata ir --format json` for the graph stages): the same
//! values, names and types as the text form ([`super::print`]), as data.
//!
//! ```json
//! {"graph": "Mlp",
//!  "values": [{"name": "%x", "type": "f32[batch, 64]", "op": "input", "text": "input",
//!              "operands": []}, …],
//!  "outputs": [{"name": "logits", "value": "%9"}],
//!  "updates": [{"param": "@dense0.weight", "value": "%31"}]}
//! ```
//! Values come in the printer's topological order; a `scan` carries its body as a nested
//! graph under `body`.

use super::graph::Graph;
use super::op::Op;
use super::print::{op_text, value_name};
use serde_json::{Value, json};

/// The graph as a JSON value.
pub fn graph_to_json(graph: &Graph) -> Value {
    let values: Vec<Value> = graph
        .topo_order()
        .into_iter()
        .map(|v| {
            let node = graph.node(v);
            let operands: Vec<String> = graph
                .operands(v)
                .into_iter()
                .map(|o| value_name(graph, o))
                .collect();
            let mut value = json!({
                "name": value_name(graph, v),
                "type": node.ty.to_string(),
                "op": node.op.mnemonic(),
                "text": op_text(&node.op),
                "operands": operands,
            });
            if let Op::Scan(scan) = &node.op {
                value["body"] = graph_to_json(&scan.body);
            }
            value
        })
        .collect();
    let outputs: Vec<Value> = graph
        .outputs
        .iter()
        .map(|(name, v)| json!({"name": name, "value": value_name(graph, *v)}))
        .collect();
    let updates: Vec<Value> = graph
        .updates
        .iter()
        .map(|(p, v)| json!({"param": value_name(graph, *p), "value": value_name(graph, *v)}))
        .collect();
    json!({
        "graph": graph.name,
        "values": values,
        "outputs": outputs,
        "updates": updates,
    })
}
