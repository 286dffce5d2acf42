//! Model files written to break the compiler: deep nesting, huge expansions, literals
//! past the number range, duplicate sections. Each must be refused with a located
//! diagnostic (or compile) — never overflow the stack, exhaust memory or hang.
//!
//! Every case runs on a thread with a 2 MB stack, the size of an ordinary thread's, so
//! a recursion that the input controls fails here instead of passing thanks to the
//! large stack of the test harness's threads.

use strata_compiler::driver::{CompileError, CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_compiler::limits::{Limits, MAX_BLOCK_DEPTH, MAX_BRACKET_DEPTH, MAX_EXPR_DEPTH};
use strata_compiler::source::{Diagnostic, ErrorCode, SourceFile};

/// Runs `f` on a thread with a 2 MB stack.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the case ran to its end (no stack overflow, no panic)")
}

/// Compiles `text` all the way to an artifact (with its training entries), on a small
/// stack.
fn compile_small(text: String, limits: Limits) -> Result<(), Diagnostic> {
    small_stack(move || {
        let source = SourceFile::new("hostile.strata", text);
        let options = CompileOptions {
            elaborate: ElaborateOptions {
                train: true,
                limits,
                ..Default::default()
            },
            ..Default::default()
        };
        match compile(&source, &options) {
            Ok(_) => Ok(()),
            Err(CompileError::User(d)) => Err(d),
            Err(CompileError::Internal(e)) => panic!("internal compiler error: {e}"),
        }
    })
}

fn refused(text: String) -> Diagnostic {
    compile_small(text, Limits::default()).expect_err("refused")
}

fn model(body: &str) -> String {
    format!("model M {{\n    input x: f32[batch, 4]\n{body}\n}}\n")
}

/// The text the diagnostic's primary span covers.
fn spanned(text: &str, d: &Diagnostic) -> String {
    text[d.span.start as usize..d.span.end as usize].to_string()
}

#[test]
fn ten_thousand_chained_relus_are_refused_at_the_limit() {
    let text = model(&format!("    output y = x{}", " |> relu".repeat(10_000)));
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert!(
        d.message.contains(&MAX_EXPR_DEPTH.to_string()),
        "{}",
        d.message
    );
    assert_eq!(spanned(&text, &d), "relu");
}

#[test]
fn a_ten_thousand_term_sum_is_refused_at_the_limit() {
    let text = model(&format!("    output y = x{}", " + x".repeat(10_000)));
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert_eq!(spanned(&text, &d), "+");
}

#[test]
fn ten_thousand_nested_parentheses_are_refused_at_the_first_too_deep() {
    let text = model(&format!(
        "    output y = {}x{}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    ));
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    // The model's `{` is the first bracket of the nest.
    let first = text.find('(').expect("a parenthesis");
    assert_eq!(d.span.start as usize, first + MAX_BRACKET_DEPTH - 1);
}

#[test]
fn nested_repeats_past_the_parser_limit_are_refused() {
    let text = model(&format!(
        "    output y = x |> {}relu",
        "repeat 2 ".repeat(5_000)
    ));
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert_eq!(spanned(&text, &d), "repeat");
}

#[test]
fn an_expression_just_inside_the_depth_limit_compiles_and_trains_on_a_small_stack() {
    // `x` is 1 deep, `x |> dense(4)` 2, and each `|> relu` one more.
    let stages = " |> relu".repeat(MAX_EXPR_DEPTH - 2);
    let text = format!(
        "model M {{\n    input x: f32[batch, 4]\n    output y = x |> dense(4){stages}\n}}\n\
         train M {{\n    data = csv(\"none.csv\")\n    loss = mse(y, x)\n}}\n"
    );
    compile_small(text, Limits::default()).expect("compiles");
}

#[test]
fn ten_thousand_chained_bindings_compile_on_a_small_stack() {
    let mut body = String::from("    h0 = x |> dense(4)\n");
    for i in 1..=10_000 {
        body.push_str(&format!("    h{i} = h{} |> relu\n", i - 1));
    }
    body.push_str("    output y = h10000");
    compile_small(model(&body), Limits::default()).expect("compiles");
}

/// `count` blocks, each calling the next; the model calls the first.
fn block_chain(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let next = match i + 1 < count {
            true => format!("B{}(x)", i + 1),
            false => "relu(x)".to_string(),
        };
        text.push_str(&format!("block B{i}(x) {{\n    return {next}\n}}\n"));
    }
    text + &model("    output y = B0(x)")
}

#[test]
fn two_thousand_blocks_calling_each_other_are_refused_at_the_limit() {
    let text = block_chain(2_000);
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert_eq!(spanned(&text, &d), format!("B{MAX_BLOCK_DEPTH}(x)"));
}

#[test]
fn blocks_nested_to_the_limit_compile_on_a_small_stack() {
    compile_small(block_chain(MAX_BLOCK_DEPTH), Limits::default()).expect("compiles");
}

#[test]
fn nested_repeats_that_multiply_past_the_graph_budget_are_refused_before_expanding() {
    let text = model("    output y = x |> repeat 10000 repeat 10000 dense(4)");
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert_eq!(spanned(&text, &d), "repeat 10000 dense(4)");
    assert!(
        d.notes.iter().any(|n| n.contains("STRATA_MAX_GRAPH_NODES")),
        "{d:?}"
    );
}

#[test]
fn repeats_of_a_block_that_adds_nothing_are_refused_too() {
    let text = "block Same(x) {\n    return x\n}\n".to_string()
        + &model("    output y = x |> repeat 10000 repeat 10000 repeat 10000 Same");
    let d = refused(text);
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
}

#[test]
fn a_graph_past_a_lowered_budget_is_refused_at_the_op_that_passes_it() {
    let text = model("    output y = x |> repeat 50 relu");
    let limits = Limits {
        graph_nodes: 20,
        ..Limits::default()
    };
    let d = compile_small(text.clone(), limits).expect_err("refused");
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    assert!(d.message.contains("20 values"), "{}", d.message);
}

#[test]
fn parameters_past_the_budget_are_refused_at_the_layer() {
    let text = model("    output y = x |> dense(30000) |> dense(30000)");
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::TooLarge, "{d:?}");
    // The first layer's 120,000 weights fit; the second's 900 million do not.
    assert!(text[d.span.start as usize..].starts_with("dense(30000)"));
    assert!(d.span.start as usize > text.find("dense").expect("dense"));
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("STRATA_MAX_PARAMETER_BYTES")),
        "{d:?}"
    );
}

#[test]
fn number_literals_past_the_f64_range_are_refused() {
    let text = model("    output y = x * 1e999");
    let d = refused(text.clone());
    assert_eq!(spanned(&text, &d), "1e999");
}

#[test]
fn constants_past_the_f32_range_are_refused() {
    let text = model("    output y = x * 1e300");
    let d = refused(text.clone());
    assert_eq!(spanned(&text, &d), "1e300");
}

#[test]
fn constant_arithmetic_that_overflows_is_refused() {
    let text = model("    output y = x * (1e200 * 1e200)");
    let d = refused(text.clone());
    assert_eq!(spanned(&text, &d), "1e200 * 1e200");
}

#[test]
fn a_second_model_of_the_same_name_is_refused_with_both_locations() {
    let text = model("    output y = x") + &model("    output z = x");
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::DuplicateSection, "{d:?}");
    let second = text.rfind("model M").expect("second") + "model ".len();
    assert_eq!(d.span.start as usize, second);
    assert_eq!(d.secondary[0].0.start as usize, "model ".len());
}

#[test]
fn a_second_train_section_for_a_model_is_refused_with_both_locations() {
    let train = "train M {\n    data = csv(\"d.csv\")\n    loss = mse(y, x)\n}\n";
    let text = model("    output y = x |> dense(4)") + train + train;
    let d = refused(text.clone());
    assert_eq!(d.code, ErrorCode::DuplicateSection, "{d:?}");
    assert_eq!(d.secondary.len(), 1);
    assert!(d.span.start > d.secondary[0].0.start);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let text = format!("\u{FEFF}{}", model("    output y = x |> relu"));
    compile_small(text, Limits::default()).expect("compiles");
}

#[test]
fn checking_grows_about_linearly_with_the_number_of_bindings() {
    // 50,000 bindings took minutes when every name lookup measured its edit distance to
    // every bound name; linear work takes about a second even in a debug build.
    let mut body = String::new();
    body.push_str("    h0 = x\n");
    for i in 1..=50_000 {
        body.push_str(&format!("    h{i} = h{} |> relu\n", i - 1));
    }
    body.push_str("    output y = h50000");
    let text = model(&body);
    let started = std::time::Instant::now();
    let checked = small_stack(move || {
        strata_compiler::driver::check(
            &SourceFile::new("bindings.strata", text),
            &ElaborateOptions::default(),
            &[],
        )
        .map(|models| models[0].ops)
    });
    assert_eq!(checked.expect("checks"), 50_001);
    let took = started.elapsed();
    assert!(
        took.as_secs() < 30,
        "checking 50,000 bindings took {took:?}"
    );
}

/// A model with a train section whose settings are `settings`.
fn trained(settings: &str) -> String {
    model("    output y = x |> dense(4)")
        + &format!("train M {{\n    data = csv(\"d.csv\")\n    loss = mse(y, x)\n{settings}\n}}\n")
}

/// Compiles `text` with command-line train overrides; the diagnostic it is refused with.
fn refused_with(text: &str, overrides: &[(&str, &str)]) -> Diagnostic {
    let source = SourceFile::new("settings.strata", text);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        train_overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    match compile(&source, &options) {
        Ok(_) => panic!("expected {overrides:?} to be refused in\n{text}"),
        Err(CompileError::User(d)) => d,
        Err(CompileError::Internal(e)) => panic!("internal compiler error: {e}"),
    }
}

#[test]
fn out_of_range_settings_are_refused_at_their_span_stating_the_range() {
    let cases = [
        (
            "    optimizer = sgd(lr = -0.1)",
            "`lr` must be a finite number > 0",
        ),
        (
            "    optimizer = sgd(lr = 0)",
            "`lr` must be a finite number > 0",
        ),
        (
            "    optimizer = sgd(momentum = 1)",
            "`momentum` must be a number in [0, 1)",
        ),
        (
            "    optimizer = adam(beta1 = -0.5)",
            "`beta1` must be a number in [0, 1)",
        ),
        (
            "    optimizer = adam(beta2 = 1.5)",
            "`beta2` must be a number in [0, 1)",
        ),
        (
            "    optimizer = adam(eps = 0)",
            "`eps` must be a finite number > 0",
        ),
        (
            "    optimizer = adamw(weight_decay = -1)",
            "`weight_decay` must be a finite number >= 0",
        ),
        (
            "    optimizer = rmsprop(alpha = 2)",
            "`alpha` must be a number in [0, 1)",
        ),
        ("    epochs = 1e30", "`epochs` must be an integer from 1"),
        ("    epochs = 2.5", "`epochs` must be an integer from 1"),
        (
            "    batch = 0",
            "`batch` must be an integer from 1 to 2147483648",
        ),
        ("    seed = -1", "`seed` must be an integer from 0"),
        (
            "    checkpoint_every = -3",
            "`checkpoint_every` must be an integer from 0",
        ),
        (
            "    schedule = step(every = 0)",
            "`every` must be an integer from 1",
        ),
        (
            "    schedule = step(gamma = 0)",
            "`gamma` must be a finite number > 0",
        ),
        (
            "    schedule = cosine(warmup = -5)",
            "`warmup` must be an integer from 0",
        ),
        (
            "    early_stop(on = val.loss, patience = 0)",
            "`patience` must be an integer from 1",
        ),
        (
            "    early_stop(on = val.loss, min_delta = -1)",
            "`min_delta` must be a finite number >= 0",
        ),
    ];
    for (setting, message) in cases {
        let text = trained(setting);
        let d = refused_with(&text, &[]);
        assert!(d.message.starts_with(message), "{setting}: {}", d.message);
        assert_eq!(spanned(&text, &d), setting.trim(), "{setting}");
    }
}

#[test]
fn split_fractions_must_be_finite_and_sum_to_one() {
    let text = trained("    split = 0.5 / 0.5 / 0.5");
    let d = refused_with(&text, &[]);
    assert!(d.message.contains("split fractions"), "{}", d.message);
}

#[test]
fn out_of_range_overrides_name_the_option_and_the_range() {
    let text = trained("    optimizer = adam(lr = 1e-3)");
    let cases = [
        (
            "lr",
            "nan",
            "--set lr=NaN: `lr` must be a finite number > 0",
        ),
        (
            "lr",
            "inf",
            "--set lr=inf: `lr` must be a finite number > 0",
        ),
        (
            "lr",
            "-1",
            "--set lr=-1.0: `lr` must be a finite number > 0",
        ),
        (
            "epochs",
            "1e30",
            "--set epochs=1e30: `epochs` must be an integer from 1",
        ),
        (
            "seed",
            "-1",
            "--set seed=-1.0: `seed` must be an integer from 0",
        ),
        (
            "batch",
            "0.5",
            "--set batch=0.5: `batch` must be an integer from 1",
        ),
    ];
    for (key, value, message) in cases {
        let d = refused_with(&text, &[(key, value)]);
        assert!(
            d.message.starts_with(message),
            "{key}={value}: {}",
            d.message
        );
    }
}

/// Checks `text` on a small stack and returns how long it took.
fn time_check(name: &'static str, text: String) -> std::time::Duration {
    let started = std::time::Instant::now();
    small_stack(move || {
        strata_compiler::driver::check(
            &SourceFile::new(name, text),
            &ElaborateOptions::default(),
            &[],
        )
        .map(|models| models.iter().map(|m| m.ops).sum::<usize>())
    })
    .expect("checks");
    started.elapsed()
}

/// Every layer call copied the paths of all earlier parameters, and every call of a
/// standard-library block the ids of all earlier values, so `check` took time quadratic
/// in the number of layers: 10,000 repeats of a three-layer block took minutes (found by
/// the `check` fuzz target).
#[test]
fn checking_many_repeated_blocks_grows_about_linearly() {
    let block = "block B(x) {\n    h = x |> dense(4) |> relu\n    return h + x\n}\n";
    let took = time_check(
        "blocks.strata",
        format!("{block}{}", model("    output y = x |> repeat 10000 B")),
    );
    assert!(took.as_secs() < 10, "10,000 repeated blocks took {took:?}");
    let took = time_check(
        "encoders.strata",
        "model M {\n    input x: f32[batch, 4, 8]\n    output y = x |> repeat 1000 \
         TransformerEncoderBlock(d = 8, heads = 2, ff = 16)\n}\n"
            .to_string(),
    );
    assert!(took.as_secs() < 10, "1,000 encoder blocks took {took:?}");
}
