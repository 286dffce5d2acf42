//! `strata check` reports every mistake of a file: every model elaborated (each binding
//! recovering from its mistake, its dependents silent), every train section's settings
//! read as `strata train` reads them, each mistake with its span and, where a known name
//! is close, a "did you mean". Each `check_catches_*` case below is a mistake that
//! `check` used to pass (it elaborated the first model alone and read no setting) and
//! `train` refused. The rendered text is a snapshot.

use strata_compiler::driver::{CompileError, CompileOptions, check, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::source::diagnostic::render_all;
use strata_compiler::source::{Diagnostic, ErrorCode, SourceFile};

/// Every mistake `check` reports in `text`, and their rendering.
fn mistakes(name: &str, text: &str) -> (Vec<Diagnostic>, String) {
    let source = SourceFile::new(format!("{name}.strata"), text);
    match check(&source, &ElaborateOptions::default(), &[]) {
        Ok(models) => panic!("{name}: expected mistakes, got {models:?}"),
        Err(errors) => {
            let rendered = render_all(&errors, &source);
            (errors, rendered)
        }
    }
}

/// The line of each mistake's primary span.
fn lines(text: &str, errors: &[Diagnostic]) -> Vec<usize> {
    let source = SourceFile::new("f.strata", text);
    errors
        .iter()
        .map(|d| source.line_col(d.span.start as usize).0)
        .collect()
}

const TEN_MISTAKES: &str = r#"
model Classifier {
    input x: f32[batch, 64]
    input mask: f32[batch, 64]
    hidden = x * mask |> dense(32) |> relu
    output logits = hidden |> dense(10)
}

train Classifier {
    label     y: i32[batch]
    data      = digitz
    features  = x
    optimizer = adamm(lr = 1e-3)
    schedule  = cosin(warmup = 10)
    batch     = 0
    epochs    = 2.5
    normalise = standardize
    metrics   = [acuracy, f1]
    early_stop(on = val.acuracy, patience = 3)
    loss      = cross_entropy(logits, y)
}

train Clasifier {
    loss = mse(logits, x)
}
"#;

#[test]
fn ten_train_section_mistakes_are_all_reported_with_their_lines() {
    let (errors, rendered) = mistakes("ten_mistakes", TEN_MISTAKES);
    assert_eq!(errors.len(), 10, "{rendered}");
    // mask (3), data (10), optimizer (12), schedule (13), batch (14), epochs (15),
    // normalise (16), the metric (17), early_stop's `on` (18), `train Clasifier` (22).
    assert_eq!(
        lines(TEN_MISTAKES, &errors),
        [4, 11, 13, 14, 15, 16, 17, 18, 19, 23],
        "{rendered}"
    );
    insta::assert_snapshot!(rendered);
}

#[test]
fn mistakes_across_models_and_sections_are_reported_in_file_order() {
    let text = r#"
model Encoder(width = 16) {
    input x: f32[batch, 8]
    h = x |> dense(width) |> rellu
    z = h |> dense(4) |> relu
    output code = z |> dense(4)
    output skip = x |> dense(8)
}

model Regressor {
    input x: f32[batch, 10]
    layer enc = dense(8)
    a = x |> enc |> relu
    b = a + x
    output y = a |> dense(1)
}

train Regressor {
    label     t: f32[batch, 1]
    data      = diabetes
    optimizer = sgd(lr = -0.1)
    loss      = mse(y, target)
}

model Tagger {
    input x: f32[batch, 4]
    output tags = x |> dense(3)
}

train Tagger {
    label  y: i32[batch]
    loss   = cross_entropy(tags, y)
    predict = tag
}
"#;
    let (errors, rendered) = mistakes("several_models", text);
    // `rellu` once (not again at `z`, `code`), the add, `lr`, `target`, `tag`.
    assert_eq!(errors.len(), 5, "{rendered}");
    assert_eq!(lines(text, &errors), [4, 14, 21, 22, 33], "{rendered}");
    insta::assert_snapshot!(rendered);
}

#[test]
fn a_failed_binding_is_reported_once_however_many_use_it() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    h = x |> dense(8) |> sigmod
    a = h |> dense(4)
    b = h + a
    layer enc = dnse(3)
    output y = a + b
    output z = x |> enc
    output w = x |> dense(2)
}
"#;
    let (errors, rendered) = mistakes("poisoned", text);
    assert_eq!(lines(text, &errors), [4, 7], "{rendered}");
    assert!(rendered.contains("did you mean `sigmoid`?"), "{rendered}");
    assert!(rendered.contains("did you mean `dense`?"), "{rendered}");
}

#[test]
fn mistakes_in_terms_and_the_loss_are_each_reported_at_their_span() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    output y = x |> dense(4)
}

train M {
    term rows = sum(square(y - x), axis = 1)
    term kl = kl_divergance(y, x)
    term rows = mean(y)
    term accuracy = mean(y)
    term fine = mean(abs(y - x))
    loss = 0.1 * fien + fine + rows + kl
}
"#;
    let (errors, rendered) = mistakes("terms", text);
    // The non-scalar term, the misspelled loss, the second `rows`, the metric's name, the
    // misspelled term in the loss; the loss's uses of the failed terms stay silent.
    assert_eq!(lines(text, &errors), [8, 9, 10, 11, 13], "{rendered}");
    assert!(rendered.contains("axis 0 (batch) remains"), "{rendered}");
    assert!(
        rendered.contains("did you mean `kl_divergence`?"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `fine`?"), "{rendered}");
    insta::assert_snapshot!(rendered);
}

#[test]
fn compile_stops_at_the_first_of_the_mistakes_check_lists() {
    let source = SourceFile::new("ten.strata", TEN_MISTAKES);
    let (errors, _) = mistakes("ten_mistakes", TEN_MISTAKES);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    match compile(&source, &options) {
        Err(CompileError::User(d)) => {
            assert_eq!(d, errors[0], "{}", d.render(&source));
        }
        Err(e) => panic!("{}", e.render(&source)),
        Ok(_) => panic!("compiled a file with ten mistakes"),
    }
}

#[test]
fn a_well_formed_file_lists_every_model() {
    let text = r#"
model A {
    input x: f32[batch, 4]
    output y = x |> dense(2)
}

model B {
    input x: f32[batch, 3]
    output y = x |> dense(1)
}

train B {
    label t: f32[batch, 1]
    data  = diabetes
    loss  = mse(y, t)
}
"#;
    let source = SourceFile::new("ab.strata", text);
    let models = check(&source, &ElaborateOptions::default(), &[]).expect("well-formed");
    let names: Vec<(&str, bool)> = models
        .iter()
        .map(|m| (m.name.as_str(), m.trained))
        .collect();
    assert_eq!(names, [("A", false), ("B", true)]);
    assert_eq!(models[0].parameters, 4 * 2 + 2);
}

#[test]
fn train_overrides_are_checked_too() {
    let text = r#"
model M {
    input x: f32[batch, 4]
    output y = x |> dense(4)
}

train M {
    loss = mse(y, x)
}
"#;
    let source = SourceFile::new("m.strata", text);
    let overrides = [("lr".to_string(), "-1".to_string())];
    let errors = check(&source, &ElaborateOptions::default(), &overrides).expect_err("lr < 0");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.starts_with("--set lr="),
        "{}",
        errors[0].message
    );
}

const MODEL: &str = r#"
model Net {
    input x: f32[batch, 64]
    output logits = x |> dense(16) |> relu |> dense(10)
}
"#;

/// One mistake in a section of `Net` (or the file): exactly one diagnostic, of `code`.
macro_rules! check_catches {
    ($test:ident, $code:expr, $section:expr) => {
        #[test]
        fn $test() {
            let text = format!("{MODEL}{}", $section);
            let (errors, rendered) = mistakes(stringify!($test), &text);
            assert_eq!(errors.len(), 1, "{rendered}");
            assert_eq!(errors[0].code, $code, "{rendered}");
            insta::assert_snapshot!(rendered);
        }
    };
}

check_catches!(
    check_catches_an_unknown_optimizer,
    ErrorCode::UnknownLayer,
    r#"
train Net {
    label     y: i32[batch]
    optimizer = rmsprob(lr = 1e-3)
    loss      = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_unknown_dataset,
    ErrorCode::UnknownName,
    r#"
train Net {
    label y: i32[batch]
    data  = "iris.csv"
    loss  = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_unknown_kind_of_data_file,
    ErrorCode::UnknownName,
    r#"
train Net {
    label y: i32[batch]
    data  = cvs("iris.csv")
    loss  = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_unknown_metric,
    ErrorCode::UnknownName,
    r#"
train Net {
    label   y: i32[batch]
    metrics = [accuracy, recal]
    loss    = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_early_stop_on_a_value_the_model_does_not_compute,
    ErrorCode::BadArgument,
    r#"
train Net {
    label y: i32[batch]
    early_stop(on = val.mse, patience = 3)
    loss  = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_early_stop_without_a_validation_split,
    ErrorCode::BadArgument,
    r#"
train Net {
    label y: i32[batch]
    split = 0.9 / 0 / 0.1
    early_stop(on = val.loss, patience = 3)
    loss  = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_an_input_the_data_does_not_fill,
    ErrorCode::BadArgument,
    r#"
model Masked {
    input x: f32[batch, 8]
    input keep: f32[batch, 8]
    output y = x * keep |> dense(1)
}

train Masked {
    label    t: f32[batch, 1]
    features = x
    data     = csv("f.csv")
    loss     = mse(y, t)
}
"#
);

check_catches!(
    check_catches_a_misspelled_model_in_train,
    ErrorCode::NoModel,
    r#"
train Nett {
    label y: i32[batch]
    loss  = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_a_misspelled_prediction,
    ErrorCode::BadArgument,
    r#"
train Net {
    label   y: i32[batch]
    predict = logit
    loss    = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_a_setting_out_of_its_range,
    ErrorCode::BadHyperParam,
    r#"
train Net {
    label     y: i32[batch]
    optimizer = adam(lr = 1e-3, beta1 = 1.5)
    loss      = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_a_bad_schedule,
    ErrorCode::BadHyperParam,
    r#"
train Net {
    label    y: i32[batch]
    schedule = step(every = 0)
    loss     = cross_entropy(logits, y)
}
"#
);

check_catches!(
    check_catches_a_mistake_in_the_second_model,
    ErrorCode::ShapeMismatch,
    r#"
model Second {
    input x: f32[batch, 4]
    h = x |> dense(3)
    output y = h + x
}
"#
);

/// Recovery leaves partial graphs behind: every section check that reads one must cope
/// with what a failed part did not make (no panic, no follow-up mistake).
#[test]
fn sections_of_models_with_mistakes_report_only_their_own() {
    let cases: &[(&str, usize)] = &[
        // The loss fails: the label is still an input, the settings are still read.
        (
            "model M {\n    input x: f32[batch, 4]\n    output y = x |> dense(2)\n}\n\
             train M {\n    label t: i32[batch]\n    metrics = [accuracy]\n    loss = cross_entropy(y, u)\n}\n",
            1,
        ),
        // The label's type fails: no task, so no metric is judged against it.
        (
            "model M {\n    input x: f32[batch, 4]\n    output y = x |> dense(2)\n}\n\
             train M {\n    label t: i32[batch, nope]\n    metrics = [mae]\n    loss = mse(y, y)\n}\n",
            1,
        ),
        // The output `predict` names failed: not reported again.
        (
            "model M {\n    input x: f32[batch, 4]\n    output y = x |> dense(2)\n    output z = x |> dnse(2)\n}\n\
             train M {\n    predict = z\n    loss = mse(y, y)\n}\n",
            1,
        ),
        // An input whose type failed is not an unfilled input.
        (
            "model M {\n    input x: f32[batch, 4]\n    input m: f32[batch, nope]\n    output y = x |> dense(2)\n}\n\
             train M {\n    features = x\n    loss = mse(y, y)\n}\n",
            1,
        ),
        // A binding nothing uses: its parameters are pruned from the graph.
        (
            "model M {\n    input x: f32[batch, 4]\n    h = x |> dense(8)\n    output y = x |> dense(2)\n}\n\
             train M {\n    optimizer = sgdd(lr = 0.1)\n    loss = mse(y, y)\n}\n",
            1,
        ),
    ];
    for (text, count) in cases {
        let (errors, rendered) = mistakes("partial", text);
        assert_eq!(errors.len(), *count, "{text}\n{rendered}");
    }
}

#[test]
fn a_section_compiles_when_an_unused_binding_made_parameters() {
    // The unused binding's parameters are pruned from the graph before the section
    // picks the parameters to train; it must not look for them.
    let text = "model M {\n    input x: f32[batch, 4]\n    h = x |> dense(8)\n    output y = x |> dense(2)\n}\n\
                train M {\n    label t: f32[batch, 2]\n    data = csv(\"f.csv\")\n    loss = mse(y, t)\n}\n";
    let source = SourceFile::new("unused.strata", text);
    check(&source, &ElaborateOptions::default(), &[]).expect("well-formed");
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let compiled = compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)));
    assert!(compiled.train_config.is_some());
}

#[test]
fn a_second_label_whose_type_fails_is_reported_once() {
    let text = r#"
model Two {
    input x: f32[batch, 4]
    input m: f32[batch, 4]
    output y = (x * m) |> dense(1)
    output c = x |> dense(3)
}

train Two {
    data    = npz("d.npz", m = "mask", k = "kinds")
    label t: f32[batch, 1]
    label k: i32[batch, width]
    loss    = mse(y, t)
    metrics = [mae(y, t), accuracy(c, k), f1(c, kk)]
}
"#;
    let (errors, rendered) = mistakes("second_label", text);
    // The label's unknown `width` (E0002), then the metric's misspelled label: never a
    // follow-up about `k`, whose declaration failed.
    assert_eq!(lines(text, &errors), vec![12, 14], "{rendered}");
    assert_eq!(errors[0].code, ErrorCode::UnknownName, "{rendered}");
    assert!(rendered.contains("not `kk`"), "{rendered}");
}
