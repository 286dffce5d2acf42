//! Every kind of user mistake renders as one diagnostic with its code and source span.
//! Each case is a small model file; the rendered text is a snapshot.

use strata_compiler::driver::check;
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::diagnostic::render_all;
use strata_compiler::source::{ErrorCode, SourceFile};

fn diagnose(name: &str, text: &str, overrides: &[(&str, &str)]) -> (ErrorCode, String) {
    let source = SourceFile::new(format!("{name}.strata"), text);
    let options = ElaborateOptions {
        model: None,
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        train: true,
        training_mode: false,
        limits: Default::default(),
    };
    match check(&source, &options, &[]) {
        Ok(_) => panic!("{name}: expected an error"),
        Err(errors) => (errors[0].code, render_all(&errors, &source)),
    }
}

macro_rules! diagnostic_case {
    ($test:ident, $code:expr, $text:expr) => {
        diagnostic_case!($test, $code, $text, &[]);
    };
    ($test:ident, $code:expr, $text:expr, $overrides:expr) => {
        #[test]
        fn $test() {
            let (code, rendered) = diagnose(stringify!($test), $text, $overrides);
            assert_eq!(code, $code, "{rendered}");
            insta::assert_snapshot!(rendered);
        }
    };
}

diagnostic_case!(
    syntax_error_missing_bracket,
    ErrorCode::Syntax,
    r#"
model M {
    input x: f32[batch, 4
    output y = x
}
"#
);

diagnostic_case!(
    syntax_error_stray_token,
    ErrorCode::Syntax,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x |> relu )
}
"#
);

diagnostic_case!(
    unknown_name_with_suggestion,
    ErrorCode::UnknownName,
    r#"
model M {
    input x: f32[batch, 4]
    hidden = x |> dense(8) |> relu
    output y = hiden |> dense(2)
}
"#
);

diagnostic_case!(
    unknown_layer_with_suggestion,
    ErrorCode::UnknownLayer,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x |> dense(8) |> rellu
}
"#
);

diagnostic_case!(
    too_many_arguments,
    ErrorCode::Arity,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x |> dense(8, true, xavier_uniform, 3)
}
"#
);

diagnostic_case!(
    missing_argument,
    ErrorCode::Arity,
    r#"
model M {
    input x: f32[batch, 4]
    output y = dense(x)
}
"#
);

diagnostic_case!(
    unknown_named_argument,
    ErrorCode::BadArgument,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x |> dense(8, activation = relu)
}
"#
);

diagnostic_case!(
    shape_mismatch_in_add,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: f32[batch, 4]
    h = x |> dense(8)
    output y = h + x
}
"#
);

diagnostic_case!(
    shape_mismatch_in_matmul,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input a: f32[batch, 4]
    input b: f32[5, 3]
    output y = matmul(a, b)
}
"#
);

diagnostic_case!(
    dtype_mismatch,
    ErrorCode::DTypeMismatch,
    r#"
model M {
    input x: f32[batch, 4]
    input ids: i32[batch, 4]
    output y = x + ids
}
"#
);

diagnostic_case!(
    duplicate_binding,
    ErrorCode::DuplicateBinding,
    r#"
model M {
    input x: f32[batch, 4]
    h = x |> dense(8)
    h = h |> relu
    output y = h
}
"#
);

diagnostic_case!(
    unused_input,
    ErrorCode::UnusedInput,
    r#"
model M {
    input x: f32[batch, 4]
    input mask: f32[batch, 4]
    output y = x |> dense(2)
}
"#
);

diagnostic_case!(
    bad_hyper_parameter_value,
    ErrorCode::BadHyperParam,
    r#"
model M(hidden = 8) {
    input x: f32[batch, 4]
    output y = x |> dense(hidden)
}
"#,
    &[("hidden", "-3")]
);

diagnostic_case!(
    unknown_hyper_parameter_override,
    ErrorCode::BadHyperParam,
    r#"
model M(hidden = 8) {
    input x: f32[batch, 4]
    output y = x |> dense(hidden)
}
"#,
    &[("hiden", "16")]
);

diagnostic_case!(
    recursive_block,
    ErrorCode::Recursion,
    r#"
block Loop(x) {
    return x |> Loop
}
model M {
    input x: f32[batch, 4]
    output y = x |> Loop
}
"#
);

diagnostic_case!(
    shared_layer_with_different_input_sizes,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input a: f32[batch, 4]
    input b: f32[batch, 6]
    layer enc = dense(8)
    output y = enc(a) + enc(b)
}
"#
);

diagnostic_case!(
    model_without_outputs,
    ErrorCode::MissingOutput,
    r#"
model M {
    input x: f32[batch, 4]
    h = x |> relu
}
"#
);

diagnostic_case!(
    reduction_over_batch,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: f32[batch, 4]
    output y = sum(x, axis = 0)
}
"#
);

diagnostic_case!(
    random_source_with_a_bad_shape,
    ErrorCode::BadArgument,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x + normal([batch, 0])
}
"#
);

diagnostic_case!(
    random_source_with_a_bad_seed,
    ErrorCode::BadHyperParam,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x + uniform([batch, 4], seed = 1.5)
}
"#
);

diagnostic_case!(
    uniform_with_an_empty_range,
    ErrorCode::BadHyperParam,
    r#"
model M {
    input x: f32[batch, 4]
    output y = x * uniform([4], low = 1, high = 1)
}
"#
);

diagnostic_case!(
    layer_instance_of_an_unknown_block,
    ErrorCode::UnknownLayer,
    r#"
block Critic(x) {
    return x |> dense(1)
}
model M {
    input x: f32[batch, 4]
    layer d = Critc()
    output y = x |> d
}
"#
);

#[test]
fn json_format_carries_code_and_position() {
    let source = SourceFile::new(
        "m.strata",
        "model M {\n    input x: f32[batch, 4]\n    output y = x |> rellu\n}\n",
    );
    let d =
        check(&source, &ElaborateOptions::default(), &[]).expect_err("unknown layer")[0].clone();
    let json = d.to_json(&source);
    assert_eq!(json["code"], "E0003");
    assert_eq!(json["primary"]["line"], 3);
    assert_eq!(json["primary"]["column"], 21);
}

diagnostic_case!(
    cross_attention_memory_must_be_a_sequence,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: f32[batch, 4, 8]
    input memory: f32[batch, 8]
    output y = x |> cross_attention(memory, heads = 2)
}
"#
);

diagnostic_case!(
    decoder_layer_heads_must_divide_the_features,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: f32[batch, 4, 8]
    input memory: f32[batch, 6, 5]
    output y = x |> transformer_decoder_layer(memory, heads = 3, ff = 16)
}
"#
);

diagnostic_case!(
    key_mask_must_cover_the_memory_positions,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: f32[batch, 4, 8]
    input memory: f32[batch, 6, 8]
    input mask: f32[batch, 4]
    output y = x |> transformer_decoder_layer(memory, heads = 2, ff = 16, memory_mask = mask)
}
"#
);

diagnostic_case!(
    slice_past_the_end,
    ErrorCode::ShapeMismatch,
    r#"
model M {
    input x: i32[batch, 20]
    output y = slice(x, 15, 10) |> embedding(vocab = 10, dim = 4)
}
"#
);

diagnostic_case!(
    declared_param_with_an_unknown_initializer,
    ErrorCode::BadArgument,
    r#"
model M {
    input x: f32[batch, 4]
    param w: f32[4, 4] = xavier_unifrom
    output y = matmul(x, w)
}
"#
);

diagnostic_case!(
    declared_param_declared_twice,
    ErrorCode::DuplicateBinding,
    r#"
model M {
    input x: f32[batch, 4]
    param scale: f32[] = 1.0
    param scale: f32[4] = ones
    output y = x * scale
}
"#
);

diagnostic_case!(
    declared_param_with_a_zero_dimension,
    ErrorCode::BadHyperParam,
    r#"
model M(width = 0) {
    input x: f32[batch, 4]
    param w: f32[4, width] = zeros
    output y = matmul(x, w)
}
"#
);

diagnostic_case!(
    layer_param_reference_with_a_misspelled_parameter,
    ErrorCode::UnknownName,
    r#"
model M {
    input x: f32[batch, 4]
    layer enc = dense(2)
    h = x |> enc
    output y = matmul(h, enc.weigth)
}
"#
);

diagnostic_case!(
    layer_param_reference_with_a_misspelled_instance,
    ErrorCode::UnknownName,
    r#"
model M {
    input x: f32[batch, 4]
    layer encoder = dense(2)
    h = x |> encoder
    output y = matmul(h, encodr.weight)
}
"#
);

diagnostic_case!(
    layer_param_reference_before_the_first_call,
    ErrorCode::UnknownName,
    r#"
model M {
    input x: f32[batch, 4]
    layer enc = dense(2)
    w = enc.weight
    output y = matmul(x |> enc, w)
}
"#
);

diagnostic_case!(
    declared_param_without_its_type,
    ErrorCode::Syntax,
    r#"
model M {
    input x: f32[batch, 4]
    param w = zeros
    output y = x * w
}
"#
);

diagnostic_case!(
    declared_param_without_its_initializer,
    ErrorCode::Syntax,
    r#"
model M {
    input x: f32[batch, 4]
    param w: f32[4]
    output y = x * w
}
"#
);
