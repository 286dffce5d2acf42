//! Mistakes in a `train` section (read when the training entries are built) render as
//! one diagnostic with its code and the setting's span. The rendered text is a snapshot.

use strata_compiler::driver::{CompileError, compile};
use strata_compiler::syntax::{ErrorCode, SourceFile};
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
