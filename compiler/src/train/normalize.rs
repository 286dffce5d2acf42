//! A train section's `normalize` as part of the compiled model.
//!
//! The normalization a section names is fitted on the train split when training starts,
//! so its statistics cannot be compile-time constants. The compiler makes them two
//! persistent buffers of the model instead, [`NORMALIZE_OFFSET`] and
//! [`NORMALIZE_SCALE`] (one value per feature of a sample), and every entry (`infer`,
//! `eval` and the training steps) computes `(x - offset) / scale` from the raw features
//! input before anything else reads it. They are not trained (no gradient, no optimizer
//! state): the training driver writes the fitted statistics into them, and they travel
//! with the parameters (`best.safetensors`, checkpoints, a built executable's weights).
//! So an executable given raw features computes what `eval` measured.
//!
//! The initial values are the identity (offset 0, scale 1), except `scale(K)`, whose
//! divisor is known here: its scale starts at `K`, so even an untrained build divides.

use crate::ir::{BinaryOp, DType, Dim, Graph, Init, Op, TensorType, ValueId};
use crate::source::{Diagnostic, ErrorCode, Span};
use strata_artifact::weight_keys::{NORMALIZE_OFFSET, NORMALIZE_PREFIX, NORMALIZE_SCALE};

/// The features' normalization, as the compiler sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureNormalization {
    /// `none`: the features reach the model as given.
    None,
    /// `standardize` or `minmax`: statistics fitted on the train split.
    Fitted,
    /// `scale(K)`: divide by `K`.
    Scale(f64),
}

impl FeatureNormalization {
    /// From the train config's spelling: `none`, `standardize`, `minmax`, `scale:K`.
    pub fn of_config(text: &str) -> Option<FeatureNormalization> {
        match text {
            "none" => Some(FeatureNormalization::None),
            "standardize" | "minmax" => Some(FeatureNormalization::Fitted),
            _ => text
                .strip_prefix("scale:")?
                .parse()
                .ok()
                .map(FeatureNormalization::Scale),
        }
    }
}

/// Makes every user of `features` (a raw features input) read `(features - offset) /
/// scale` instead, the two buffers created as parameters of `graph`. `span` is the
/// `normalize` setting's, for errors.
pub fn normalize_features(
    graph: &mut Graph,
    features: ValueId,
    normalization: &FeatureNormalization,
    span: Span,
) -> Result<(), Diagnostic> {
    let scale_init = match normalization {
        FeatureNormalization::None => return Ok(()),
        FeatureNormalization::Fitted => Init::Ones,
        FeatureNormalization::Scale(k) => Init::Constant(*k),
    };
    let ty = graph.ty(features).clone();
    if ty.dtype != DType::F32 {
        return Err(Diagnostic::error(
            ErrorCode::BadArgument,
            format!("the features input is {ty}: only f32 features can be normalized"),
            span,
        )
        .with_label("remove this, or feed f32 features"));
    }
    if let Some((_, path)) = graph
        .params()
        .into_iter()
        .find(|(_, p)| p.starts_with(NORMALIZE_PREFIX))
    {
        return Err(Diagnostic::error(
            ErrorCode::DuplicateBinding,
            format!(
                "parameter `{path}` takes a name the normalization's statistics use \
                 (`{NORMALIZE_OFFSET}`, `{NORMALIZE_SCALE}`)"
            ),
            span,
        )
        .with_note("rename the layer whose parameters start with `normalize.`"));
    }
    let dims = ty.shape.dims();
    let sample: Vec<Dim> = match dims.split_first() {
        Some((Dim::Batch, rest)) => rest.to_vec(),
        _ => dims.to_vec(),
    };
    if sample.contains(&Dim::Batch) {
        return Err(Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!(
                "the features input {ty} has the batch inside a sample: it cannot be normalized per feature"
            ),
            span,
        ));
    }
    let stat_ty = TensorType::new(DType::F32, sample);
    let internal = |e: String| {
        Diagnostic::error(
            ErrorCode::ShapeMismatch,
            format!("cannot normalize the features: {e}"),
            span,
        )
    };
    graph
        .interpose(features, |g, x| {
            let offset = g.add_leaf(
                Op::Param {
                    path: NORMALIZE_OFFSET.to_string(),
                    init: Init::Zeros,
                },
                stat_ty.clone(),
                span,
            );
            let scale = g.add_leaf(
                Op::Param {
                    path: NORMALIZE_SCALE.to_string(),
                    init: scale_init,
                },
                stat_ty,
                span,
            );
            let centered = g.add(Op::Binary(BinaryOp::Sub), &[x, offset], span)?;
            g.add(Op::Binary(BinaryOp::Div), &[centered, scale], span)
        })
        .map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Shape;

    fn features_graph() -> (Graph, ValueId, ValueId) {
        let mut g = Graph::new("m");
        let ty = TensorType::new(DType::F32, vec![Dim::Batch, Dim::Fixed(3)]);
        let x = g.add_leaf(Op::Input { name: "x".into() }, ty, Span::default());
        let y = g
            .add(Op::Unary(crate::ir::UnaryOp::Relu), &[x], Span::default())
            .unwrap();
        g.outputs.push(("y".into(), y));
        (g, x, y)
    }

    #[test]
    fn users_of_the_features_read_them_normalized() {
        let (mut g, x, y) = features_graph();
        normalize_features(
            &mut g,
            x,
            &FeatureNormalization::Scale(16.0),
            Span::default(),
        )
        .unwrap();
        g.verify().unwrap();
        let read = g.operands(y)[0];
        assert!(matches!(g.node(read).op, Op::Binary(BinaryOp::Div)));
        let params = g.params();
        let scale = params
            .iter()
            .find(|(_, p)| *p == NORMALIZE_SCALE)
            .map(|(v, _)| *v)
            .expect("a scale buffer");
        assert_eq!(g.ty(scale).shape, Shape(vec![Dim::Fixed(3)]));
        assert!(matches!(
            g.node(scale).op,
            Op::Param {
                init: Init::Constant(k),
                ..
            } if k == 16.0
        ));
        assert_eq!(g.inputs, vec![x], "the raw input stays the entry's input");
    }

    #[test]
    fn none_leaves_the_graph_alone() {
        let (mut g, x, _) = features_graph();
        let before = g.len();
        normalize_features(&mut g, x, &FeatureNormalization::None, Span::default()).unwrap();
        assert_eq!(g.len(), before);
    }

    #[test]
    fn integer_features_cannot_be_normalized() {
        let mut g = Graph::new("m");
        let ty = TensorType::new(DType::I32, vec![Dim::Batch, Dim::Fixed(3)]);
        let x = g.add_leaf(Op::Input { name: "x".into() }, ty, Span::default());
        let err = normalize_features(&mut g, x, &FeatureNormalization::Fitted, Span::default())
            .unwrap_err();
        assert!(err.message.contains("only f32"), "{}", err.message);
    }
}
