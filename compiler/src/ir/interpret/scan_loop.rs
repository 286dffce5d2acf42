//! The interpreter's `scan`: the body graph interpreted once per step, exactly as the
//! semantics in [`crate::ir::scan`] read.

use super::{Tensor, interpret};
use crate::ir::Op;
use crate::ir::scan::Scan;
use std::collections::HashMap;

/// `R` (every carry, stacked) or the final carry of `scan` over `operands`.
pub(super) fn run(scan: &Scan, operands: &[&Tensor]) -> Result<Tensor, String> {
    let (init, rest) = operands
        .split_first()
        .ok_or("`scan` needs an initial carry")?;
    if rest.len() < scan.sequences || scan.body.inputs.len() != operands.len() {
        return Err("the scan's operands do not match its body".into());
    }
    let (sequences, constants) = rest.split_at(scan.sequences);
    let steps = sequences
        .first()
        .and_then(|s| s.shape.first().copied())
        .ok_or("`scan` needs a sequence")?;
    if sequences.iter().any(|s| s.shape.first() != Some(&steps)) {
        return Err("scan sequences differ in length".into());
    }
    let names: Vec<String> = scan
        .body
        .inputs
        .iter()
        .map(|&i| match &scan.body.node(i).op {
            Op::Input { name } => Ok(name.clone()),
            _ => Err("a scan body input is not an input".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let out_name = &scan.body.outputs[0].0;
    let mut inputs: HashMap<String, Tensor> = HashMap::new();
    for (name, c) in names[1 + scan.sequences..].iter().zip(constants) {
        inputs.insert(name.clone(), (*c).clone());
    }
    let no_params = HashMap::new();
    let mut carries: Vec<Tensor> = vec![Tensor::zeros(vec![]); steps + 1];
    let order: Vec<usize> = if scan.reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    };
    let (first, read, write) = if scan.reverse {
        (steps, 1, 0)
    } else {
        (0, 0, 1)
    };
    carries[first] = (*init).clone();
    for t in order {
        inputs.insert(names[0].clone(), carries[t + read].clone());
        for (name, seq) in names[1..=scan.sequences].iter().zip(sequences) {
            inputs.insert(name.clone(), step_slice(seq, t));
        }
        let mut out =
            interpret(&scan.body, &inputs, &no_params).map_err(|e| format!("step {t}: {e}"))?;
        let next = out.remove(out_name).ok_or("the scan body has no output")?;
        carries[t + write] = next;
    }
    if !scan.keep_all {
        let last = if scan.reverse { 0 } else { steps };
        return Ok(carries.swap_remove(last));
    }
    let mut shape = vec![steps + 1];
    shape.extend_from_slice(&init.shape);
    let mut data = Vec::with_capacity(init.len() * (steps + 1));
    for c in &carries {
        if c.shape != init.shape {
            return Err("the scan body changed the carry's shape".into());
        }
        data.extend_from_slice(&c.data);
    }
    Ok(Tensor { shape, data })
}

/// Element `t` of a time-major sequence.
fn step_slice(seq: &Tensor, t: usize) -> Tensor {
    let shape = seq.shape[1..].to_vec();
    let n: usize = shape.iter().product();
    Tensor {
        shape,
        data: seq.data[t * n..(t + 1) * n].to_vec(),
    }
}
