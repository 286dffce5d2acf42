//! Mistakes in a `train` section (read when the training entries are built) render as
//! one diagnostic with its code and the setting's span. The rendered text is a snapshot.

use strata_compiler::driver::{CompileError, compile};
use strata_compiler::source::{ErrorCode, SourceFile};
use strata_tests::train_check::training_options;

const RECONSTRUCT: &str = r#"
model Reconstruct {
    input x: f32[batch, 64]
    output recon = x |> dense(8) |> relu |> dense(64) |> sigmoid
    output code = x |> dense(3)
}
"#;

fn diagnose(name: &str, text: &str) -> (ErrorCode, String) {
    let source = SourceFile::new(format!("{name}.strata"), text);
    match compile(&source, &training_options()) {
        Ok(_) => panic!("{name}: expected an error"),
        Err(CompileError::User(d)) => (d.code, d.render(&source)),
        Err(e) => panic!("{name}: {}", e.render(&source)),
    }
}

macro_rules! train_case {
    ($test:ident, $code:expr, $section:expr) => {
        #[test]
        fn $test() {
            let text = format!("{RECONSTRUCT}{}", $section);
            let (code, rendered) = diagnose(stringify!($test), &text);
            assert_eq!(code, $code, "{rendered}");
            insta::assert_snapshot!(rendered);
        }
    };
}

train_case!(
    loss_that_is_not_a_scalar_says_which_axes_remain,
    ErrorCode::ShapeMismatch,
    r#"
train Reconstruct {
    loss = sum(square(recon - x), axis = 1)
}
"#
);

train_case!(
    loss_of_integer_labels_asks_for_a_cast,
    ErrorCode::DTypeMismatch,
    r#"
train Reconstruct {
    label y: i32[batch]
    loss = mean(code) + y
}
"#
);

train_case!(
    term_defined_twice,
    ErrorCode::DuplicateBinding,
    r#"
train Reconstruct {
    term recon_error = mse(recon, x)
    term recon_error = mae(recon, x)
    loss = recon_error
}
"#
);

train_case!(
    term_named_after_a_metric,
    ErrorCode::DuplicateBinding,
    r#"
train Reconstruct {
    term mse = mse(recon, x)
    loss = mse
}
"#
);

train_case!(
    metrics_name_two_different_outputs,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss    = mse(recon, x)
    metrics = [mse(recon, x), mae(code, x)]
}
"#
);

train_case!(
    metric_names_an_unknown_output,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss    = mse(recon, x)
    metrics = [mse(recn, x)]
}
"#
);

train_case!(
    metric_names_a_label_the_section_has_not,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    label t: f32[batch, 64]
    loss    = mse(recon, t)
    metrics = [mse(recon, target)]
}
"#
);

train_case!(
    second_label_from_a_source_with_one_label_gets_no_data,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    data    = digits
    label t: f32[batch, 64]
    label c: f32[batch, 3]
    loss    = mse(recon, t) + mse(code, c)
}
"#
);

train_case!(
    array_mapping_names_no_input_or_label,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    data    = npz("d.npz", xs = "pixels")
    label t: f32[batch, 64]
    loss    = mse(recon, t)
}
"#
);

train_case!(
    metric_of_another_label_that_does_not_apply_to_its_head,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    data    = npz("d.npz")
    label t: f32[batch, 64]
    label c: f32[batch, 3]
    loss    = mse(recon, t) + mse(code, c)
    metrics = [mse(recon, t), accuracy(code, c)]
}
"#
);

train_case!(
    metric_output_differs_from_predict,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    label t: f32[batch, 64]
    loss    = mse(recon, t)
    predict = code
    metrics = [mse(recon, t)]
}
"#
);

train_case!(
    label_free_section_asks_for_a_classification_metric,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss    = mse(recon, x)
    metrics = [mse, accuracy]
}
"#
);

train_case!(
    image_grid_names_an_unknown_tensor,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = grid(x, recn)
}
"#
);

train_case!(
    image_grid_shape_does_not_fit_the_tensor,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = grid(x, recon, shape = [8, 4])
}
"#
);

train_case!(
    image_grid_cannot_lay_out_a_non_square_tensor,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = grid(code)
}
"#
);

train_case!(
    image_grid_has_an_unknown_argument,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = grid(x, recon, rows = 4)
}
"#
);

train_case!(
    images_is_not_a_grid,
    ErrorCode::BadArgument,
    r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = mosaic(x)
}
"#
);

#[test]
fn image_grid_with_a_path_as_file_is_refused() {
    let text = format!(
        "{RECONSTRUCT}{}",
        r#"
train Reconstruct {
    loss   = mse(recon, x)
    images = grid(x, file = "../out.png")
}
"#
    );
    let (code, rendered) = diagnose("path_as_file", &text);
    assert_eq!(code, ErrorCode::BadArgument);
    assert!(
        rendered.contains("PNG file name in the run directory"),
        "{rendered}"
    );
}

// ---- sections with several `step` blocks ----

const TWO_PARTS: &str = r#"
model Parts {
    input x: f32[batch, 8]
    layer a = dense(4)
    layer b = dense(8)
    output y = x |> a |> relu |> b
}
"#;

fn diagnose_steps(name: &str, section: &str) -> (ErrorCode, String) {
    diagnose(name, &format!("{TWO_PARTS}{section}"))
}

macro_rules! steps_case {
    ($test:ident, $code:expr, $section:expr) => {
        #[test]
        fn $test() {
            let (code, rendered) = diagnose_steps(stringify!($test), $section);
            assert_eq!(code, $code, "{rendered}");
            insta::assert_snapshot!(rendered);
        }
    };
}

steps_case!(
    step_updates_a_prefix_of_no_parameter,
    ErrorCode::BadArgument,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = [c] }
    step second { loss = mae(y, x)  updates = b }
}
"#
);

steps_case!(
    two_steps_update_one_parameter,
    ErrorCode::BadArgument,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = [a, b] }
    step second { loss = mae(y, x)  updates = b }
}
"#
);

steps_case!(
    no_step_updates_a_parameter,
    ErrorCode::BadArgument,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = a }
}
"#
);

steps_case!(
    step_without_updates,
    ErrorCode::MissingOutput,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = a }
    step second { loss = mae(y, x) }
}
"#
);

steps_case!(
    step_without_loss,
    ErrorCode::MissingOutput,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = a }
    step second { updates = b }
}
"#
);

steps_case!(
    section_loss_beside_steps,
    ErrorCode::Misplaced,
    r#"
train Parts {
    loss = mse(y, x)
    step first { loss = mse(y, x)  updates = a }
    step second { loss = mae(y, x)  updates = b }
}
"#
);

steps_case!(
    section_setting_inside_a_step,
    ErrorCode::Misplaced,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = a  epochs = 3 }
    step second { loss = mae(y, x)  updates = b }
}
"#
);

steps_case!(
    early_stopping_with_steps,
    ErrorCode::Misplaced,
    r#"
train Parts {
    early_stop(on = val.loss, patience = 3)
    step first { loss = mse(y, x)  updates = a }
    step second { loss = mae(y, x)  updates = b }
}
"#
);

steps_case!(
    step_defined_twice,
    ErrorCode::DuplicateBinding,
    r#"
train Parts {
    step first { loss = mse(y, x)  updates = a }
    step first { loss = mae(y, x)  updates = b }
}
"#
);

#[test]
fn step_is_still_a_setting_name() {
    // `step` is a keyword only before a name and a brace.
    let text = format!(
        "{TWO_PARTS}{}",
        "train Parts {\n    loss = mse(y, x)\n    step = 3\n}\n"
    );
    let source = SourceFile::new("step_setting.strata", text);
    // It parses as a setting (no syntax error), which the section then does not know.
    let Err(e) = compile(&source, &training_options()) else {
        panic!("`step = 3` is no train setting");
    };
    let rendered = e.render(&source);
    assert!(
        rendered.contains("E0005") && rendered.contains("`step` is not a train setting"),
        "{rendered}"
    );
}
