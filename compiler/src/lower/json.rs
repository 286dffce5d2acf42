//! The JSON form of the lowered program (`strata ir --stage kernels --format json`): the
//! buffers, the entry's inputs and outputs, the loops, and every launch with its kernel
//! (the kernel IR's own serde form, and its text) and the buffers bound to its slots,
//! as the text form ([`super::print`]) lists them.

use super::{BufferRole, Lowered};
use serde_json::{Value, json};

/// The lowered program as a JSON value.
pub fn kernels_to_json(l: &Lowered) -> Value {
    let buffers: Vec<Value> = l
        .buffers
        .iter()
        .enumerate()
        .map(|(id, b)| {
            let role = match &b.role {
                BufferRole::Input(name) => json!({"input": name}),
                BufferRole::Param(path) => json!({"param": path}),
                BufferRole::Temp => json!("temp"),
                BufferRole::Window(w) => json!({"window": w}),
            };
            json!({
                "id": id,
                "name": b.name,
                "dtype": format!("{:?}", b.dtype),
                "shape": b.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "role": role,
            })
        })
        .collect();
    let named = |ports: &[(String, usize)]| -> Vec<Value> {
        ports
            .iter()
            .map(|(name, b)| json!({"name": name, "buffer": b}))
            .collect()
    };
    let launches: Vec<Value> = l
        .launches
        .iter()
        .map(|launch| {
            let kernel = &l.kernels[launch.kernel];
            json!({
                "kernel": kernel,
                "text": kernel.to_string(),
                "bindings": launch.bindings,
            })
        })
        .collect();
    let loops: Vec<Value> = l
        .loops
        .iter()
        .map(|lp| {
            json!({
                "launches": [lp.start, lp.end],
                "count": lp.count,
                "reverse": lp.reverse,
            })
        })
        .collect();
    json!({
        "buffers": buffers,
        "inputs": named(&l.inputs),
        "outputs": named(&l.outputs),
        "launches": launches,
        "loops": loops,
    })
}
