//! The `images = grid(…)` setting: which tensors the training driver draws after
//! training, checked against the model so a mistake is a diagnostic, not a failed run.
//!
//! `grid(x, recon, samples = 32, columns = 8, shape = [8, 8], range = [0, 1], scale = 4,
//! file = "images.png")`: the positional arguments name the features input and/or
//! outputs of the model, drawn side by side for each sample. Every one must hold
//! `height * width` values per sample: `shape` says how they are laid out, and may be
//! left out when the per-sample shape already ends in two dims (`[1, 8, 8]`) or is a
//! square number of values (`[64]` is 8x8).

use crate::ir::{DType, Dim, Graph, Op, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};
use strata_artifact::train_config::ImageGrid;

use super::section::Setting;

/// At most this many samples are drawn (the picture stays a few megapixels).
const MAX_SAMPLES: f64 = 1024.0;
/// Each value becomes at most a `MAX_SCALE x MAX_SCALE` block.
const MAX_SCALE: f64 = 32.0;

fn bad(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(ErrorCode::BadArgument, msg, span)
}

const FORM: &str =
    "grid(x, recon, samples = 32, columns = 8, shape = [8, 8], range = [0, 1], scale = 4)";

/// Reads `images = grid(…)` against the model's `graph`, the input that takes the
/// data, and the model's outputs.
pub fn image_grid(
    setting: &Setting,
    span: Span,
    graph: &Graph,
    features_input: &str,
    outputs: &[(String, ValueId)],
) -> Result<ImageGrid, Diagnostic> {
    let Setting::Call { name, args } = setting else {
        return Err(
            bad(span, "`images` is a grid of tensors").with_help(format!("e.g. `images = {FORM}`"))
        );
    };
    if name != "grid" {
        return Err(bad(
            span,
            format!("unknown picture `{name}`; `images` takes `grid(…)`"),
        )
        .with_help(format!("e.g. `images = {FORM}`")));
    }
    let mut tensors = Vec::new();
    let mut options: Vec<(&str, &Setting)> = Vec::new();
    for (key, value) in args {
        match (key, value) {
            (None, Setting::Word(w)) => tensors.push(w.clone()),
            (None, _) => {
                return Err(bad(
                    span,
                    "`grid` draws tensors given by name (`x`, `recon`)",
                ));
            }
            (Some(k), v) => options.push((k.as_str(), v)),
        }
    }
    if tensors.is_empty() {
        return Err(bad(span, "`grid` needs at least one tensor to draw")
            .with_help(format!("e.g. `images = {FORM}`")));
    }
    let number = |key: &str, default: f64, min: f64, max: f64| -> Result<f64, Diagnostic> {
        match options.iter().find(|(k, _)| *k == key) {
            None => Ok(default),
            Some((_, Setting::Number(v))) if v.fract() == 0.0 && (min..=max).contains(v) => Ok(*v),
            Some(_) => Err(bad(
                span,
                format!("`{key}` of `grid` is an integer from {min} to {max}"),
            )),
        }
    };
    const KNOWN: [&str; 6] = ["samples", "columns", "shape", "range", "scale", "file"];
    if let Some((k, _)) = options.iter().find(|(k, _)| !KNOWN.contains(k)) {
        return Err(
            bad(span, format!("`grid` has no argument `{k}`")).with_note(format!(
                "`grid` takes tensor names, then {}",
                KNOWN.join(", ")
            )),
        );
    }
    let samples = number("samples", 32.0, 1.0, MAX_SAMPLES)?;
    let columns = number("columns", samples.sqrt().ceil(), 1.0, MAX_SAMPLES)?;
    let scale = number("scale", 4.0, 1.0, MAX_SCALE)?;
    let range = match options.iter().find(|(k, _)| *k == "range") {
        None => [0.0, 1.0],
        Some((_, Setting::List(items))) => match items.as_slice() {
            [Setting::Number(lo), Setting::Number(hi)] if lo < hi => [*lo, *hi],
            _ => return Err(bad(span, "`range` is [black, white], two numbers in order")),
        },
        Some(_) => return Err(bad(span, "`range` is [black, white], e.g. [0, 1]")),
    };
    let file = match options.iter().find(|(k, _)| *k == "file") {
        None => "images.png".to_string(),
        Some((_, Setting::Word(f)))
            if f.ends_with(".png")
                && f.len() > 4
                && !f.contains(['/', '\\'])
                && !f.starts_with('.') =>
        {
            f.clone()
        }
        Some(_) => {
            return Err(bad(
                span,
                "`file` is a PNG file name in the run directory, e.g. \"images.png\"",
            ));
        }
    };
    let shape = match options.iter().find(|(k, _)| *k == "shape") {
        None => None,
        Some((_, Setting::List(items))) => match items.as_slice() {
            [Setting::Number(h), Setting::Number(w)]
                if *h >= 1.0 && *w >= 1.0 && h.fract() == 0.0 && w.fract() == 0.0 =>
            {
                Some((*h as u64, *w as u64))
            }
            _ => {
                return Err(bad(
                    span,
                    "`shape` is [height, width], two positive integers",
                ));
            }
        },
        Some(_) => return Err(bad(span, "`shape` is [height, width], e.g. [8, 8]")),
    };
    let other_inputs: Vec<String> = graph
        .inputs
        .iter()
        .filter_map(|&i| match &graph.node(i).op {
            Op::Input { name } if name != features_input && name != "step" => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut layout = shape;
    for tensor in &tensors {
        let value = if tensor == features_input {
            graph.inputs.iter().copied().find(
                |&i| matches!(&graph.node(i).op, Op::Input { name } if name == features_input),
            )
        } else {
            outputs.iter().find(|(n, _)| n == tensor).map(|(_, v)| *v)
        };
        let Some(value) = value else {
            let known: Vec<&str> = std::iter::once(features_input)
                .chain(outputs.iter().map(|(n, _)| n.as_str()))
                .collect();
            return Err(bad(
                span,
                format!("`grid` draws the features input or an output; `{tensor}` is neither"),
            )
            .with_note(format!("it can draw: {}", known.join(", "))));
        };
        let ty = graph.ty(value);
        let per_sample = match ty.shape.dims().split_first() {
            Some((Dim::Batch, rest)) if ty.dtype == DType::F32 => {
                rest.iter().map(|d| d.fixed()).collect::<Option<Vec<u64>>>()
            }
            _ => None,
        };
        let Some(per_sample) = per_sample else {
            return Err(bad(
                span,
                format!("`grid` draws f32 tensors with one row per sample, `{tensor}` is {ty}"),
            ));
        };
        let elements: u64 = per_sample.iter().product();
        let (h, w) = match layout {
            Some(hw) => hw,
            None => match infer_layout(&per_sample) {
                Some(hw) => hw,
                None => {
                    return Err(bad(
                        span,
                        format!("cannot tell how to draw `{tensor}` ({ty}) as an image"),
                    )
                    .with_help("say its layout with `shape = [height, width]`"));
                }
            },
        };
        if h * w != elements {
            return Err(bad(
                span,
                format!(
                    "`{tensor}` ({ty}) has {elements} values per sample, not {h}x{w} = {}",
                    h * w
                ),
            )
            .with_note("every tensor of a grid is drawn with the same `shape`"));
        }
        layout = Some((h, w));
    }
    if let Some(other) = other_inputs.first() {
        return Err(bad(
            span,
            format!(
                "`grid` feeds the model only the features input `{features_input}`, but it also takes `{other}`"
            ),
        ));
    }
    let (height, width) = layout.expect("at least one tensor was checked");
    Ok(ImageGrid {
        tensors,
        samples: samples as u64,
        columns: columns as u64,
        height,
        width,
        range,
        scale: scale as u64,
        file,
    })
}

/// `[.., h, w]` with the leading dims all 1 (one channel), or a square number of values.
fn infer_layout(per_sample: &[u64]) -> Option<(u64, u64)> {
    match per_sample {
        [n] => {
            let side = (*n as f64).sqrt().round() as u64;
            (side * side == *n).then_some((side, side))
        }
        [lead @ .., h, w] if lead.iter().all(|&d| d == 1) => Some((*h, *w)),
        _ => None,
    }
}
