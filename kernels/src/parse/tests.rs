//! The parser's own tests: hand-built kernels read back, and bad text located.

use super::*;
use crate::test_fixtures::{self, STEP_WITH_TERM, f32_buffer};

fn round_trip(k: &Kernel) {
    let text = k.to_string();
    let parsed = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&parsed, k, "{text}");
    assert_eq!(parsed.to_string(), text);
}

#[test]
fn the_emitters_fixtures_read_back_as_they_were() {
    for k in [
        test_fixtures::bias_add(),
        test_fixtures::dense_relu(),
        test_fixtures::uniform_map(),
        test_fixtures::nested_softmax(),
        test_fixtures::centered_total(),
    ] {
        round_trip(&k);
    }
}

fn var(v: usize) -> Box<Index> {
    Box::new(Index::Var(v))
}

/// A kernel with every kind of body, index and expression: parts holding a map, a
/// reduction and a contraction.
fn every_construct() -> Kernel {
    let shape = [Dim::Batch, Dim::Fixed(6)];
    // `i0 * 6 + (i1 + 2)` and `i0 * (batch * 3)`: right operands of their own
    // operation, which the printer parenthesizes.
    let right_add = Index::Add(
        Box::new(Index::Mul(var(0), Box::new(Index::Const(6)))),
        Box::new(Index::Add(var(1), Box::new(Index::Const(2)))),
    );
    let right_mul = Index::Mul(
        var(0),
        Box::new(Index::Mul(
            Box::new(Index::Batch),
            Box::new(Index::Const(3)),
        )),
    );
    let div_rem = Index::Mul(
        Box::new(Index::Div(
            Box::new(Index::Add(var(1), Box::new(Index::Const(-1)))),
            2,
        )),
        Box::new(Index::Rem(var(0), 5)),
    );
    let load = |buf, index| Expr::Load { buf, index };
    let map = KernelBody::Map {
        space: shape.to_vec(),
        stores: vec![
            Store {
                buf: 2,
                index: right_add.clone(),
                value: Expr::Select {
                    cond: Box::new(Expr::binary(
                        BinaryOp::Le,
                        load(0, right_mul),
                        Expr::Const(-1.5e-7),
                    )),
                    then: Box::new(Expr::binary(
                        BinaryOp::Pow,
                        Expr::unary(UnaryOp::Sigmoid, load(1, div_rem)),
                        Expr::IndexValue(Index::Batch),
                    )),
                    otherwise: Box::new(Expr::Uniform {
                        seed: 42,
                        index: right_add.clone(),
                        step: Box::new(load(1, Index::Const(0))),
                    }),
                },
            },
            Store {
                buf: 3,
                index: Index::Var(1),
                value: Expr::Reduce {
                    op: ReduceOp::Max,
                    extent: vec![Dim::Fixed(3), Dim::Batch],
                    value: Box::new(Expr::binary(
                        BinaryOp::Min,
                        load(0, Index::Add(var(2), var(3))),
                        Expr::Reduce {
                            op: ReduceOp::Sum,
                            extent: vec![Dim::Fixed(2)],
                            value: Box::new(load(0, Index::Var(4))),
                        },
                    )),
                },
            },
        ],
    };
    let reduce = KernelBody::Reduce {
        space: vec![Dim::Fixed(6)],
        reduce: vec![Dim::Batch],
        op: ReduceOp::Min,
        value: Expr::unary(UnaryOp::Neg, load(4, Index::Var(1))),
        out: Store {
            buf: 5,
            index: Index::Var(0),
            value: Expr::binary(BinaryOp::Eq, Expr::Acc, Expr::Const(f64::INFINITY)),
        },
    };
    let contract = KernelBody::Contract(Contraction {
        batch: vec![Dim::Fixed(2)],
        summed: vec![Dim::Fixed(5)],
        m: Dim::Batch,
        n: Dim::Fixed(3),
        k: Dim::Fixed(4),
        a: MatrixOperand {
            buf: 6,
            offset: Index::Mul(var(0), Box::new(Index::Add(Box::new(Index::Batch), var(1)))),
            row_stride: Index::Const(4),
            col_stride: Index::Const(1),
            window: None,
        },
        b: MatrixOperand {
            buf: 7,
            offset: Index::Const(0),
            row_stride: Index::Add(Box::new(Index::Const(1)), Box::new(Index::Const(2))),
            col_stride: Index::Const(4),
            window: None,
        },
        out: 8,
        epilogue: Expr::unary(
            UnaryOp::Relu,
            Expr::binary(BinaryOp::Sub, Expr::Acc, Expr::Const(-0.25)),
        ),
        terms: Vec::new(),
    });
    Kernel {
        name: "every_construct".into(),
        buffers: vec![
            f32_buffer("x", &shape, Access::Read),
            test_fixtures::buffer("step", ScalarType::I32, &[], Access::Read),
            f32_buffer("y", &shape, Access::Write),
            f32_buffer("row", &[Dim::Fixed(6)], Access::ReadWrite),
            f32_buffer("cols", &[Dim::Batch, Dim::Fixed(6)], Access::Read),
            f32_buffer("col_min", &[Dim::Fixed(6)], Access::Write),
            f32_buffer(
                "a",
                &[Dim::Fixed(2), Dim::Batch, Dim::Fixed(4)],
                Access::Read,
            ),
            f32_buffer("b", &[Dim::Fixed(4), Dim::Fixed(3)], Access::Read),
            f32_buffer(
                "c",
                &[Dim::Fixed(2), Dim::Batch, Dim::Fixed(3)],
                Access::Write,
            ),
        ],
        body: KernelBody::Parts(vec![map, reduce, contract]),
    }
}

#[test]
fn every_construct_reads_back_as_it_was() {
    let k = every_construct();
    k.validate().expect("a valid kernel");
    round_trip(&k);
    for i in 0..k.part_count() {
        round_trip(&k.part(i));
    }
}

#[test]
fn right_nested_sums_and_products_keep_their_parentheses() {
    let text = every_construct().to_string();
    assert!(text.contains("y[i0 * 6 + (i1 + 2)]"), "{text}");
    assert!(text.contains("x[i0 * (batch * 3)]"), "{text}");
    assert!(text.contains("step[(i1 + -1) / 2 * (i0) % 5]"), "{text}");
}

#[test]
fn buffers_of_one_name_are_told_apart_by_their_slot() {
    let mut k = test_fixtures::bias_add();
    k.buffers[1].name = "x".into();
    let text = k.to_string();
    assert!(text.contains("(x[i0 * 3 + i1] + x@1[i1])"), "{text}");
    round_trip(&k);
}

const MAP: &str = "\
kernel k0_add map [batch, 4] (x: f32[batch, 4] r, bias: f32[4] r, y: f32[batch, 4] w) {
  y[i0 * 4 + i1] = (x[i0 * 4 + i1] + bias[i1])
}
";

#[test]
fn reads_a_map_and_prints_it_back_the_same() {
    let k = parse_kernel(MAP).expect("parses");
    assert_eq!(k.name, "k0_add");
    assert_eq!(k.buffers.len(), 3);
    let KernelBody::Map { space, stores } = &k.body else {
        panic!("a map: {k:?}");
    };
    assert_eq!(space, &[Dim::Batch, Dim::Fixed(4)]);
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0].buf, 2);
    assert_eq!(k.to_string(), MAP);
}

#[test]
fn reads_several_kernels_between_comments_and_blank_lines() {
    let text = format!(
        "# two kernels\n\n{MAP}\n{}",
        MAP.replace("k0_add", "k1_add")
    );
    let kernels = parse_kernels(&text).expect("parses");
    let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["k0_add", "k1_add"]);
    let err = parse_kernel(&text).expect_err("two kernels are not one");
    assert!(err.message.contains("found 2"), "{err}");
}

/// The error for `text`, which must not parse.
fn error(text: &str) -> ParseError {
    match parse_kernels(text) {
        Ok(k) => panic!("parsed: {k:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_load_of_an_undeclared_buffer_is_an_error_on_its_line() {
    let e = error(&MAP.replace("bias[i1]", "bias2[i1]"));
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("`bias2` is not a buffer"), "{e}");
}

#[test]
fn a_missing_closing_brace_is_reported_at_the_end() {
    let e = error(MAP.trim_end().trim_end_matches('}'));
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("closing kernel `k0_add`"), "{e}");
}

#[test]
fn bad_headers_are_errors_on_the_first_line() {
    for (header, want) in [
        ("kernel k0 map [batch, 4] x: f32[4] r {", "`( … )`"),
        ("kernel k0 loop [4] (x: f32[4] r) {", "found `loop`"),
        ("kernel k0 map [4] (x: f64[4] r) {", "element type `f64`"),
        ("kernel k0 map [4] (x: f32[4] q) {", "found `q`"),
        (
            "kernel k0 map [4] (x: f32[4] r, x: f32[4] w) {",
            "declared twice",
        ),
        ("kernel k0 map [four] (x: f32[4] r) {", "dimension"),
        ("graph k0 {", "expected `kernel NAME"),
    ] {
        let e = error(&format!("\n{header}\n}}\n"));
        assert_eq!(e.line, 2, "{header}: {e}");
        assert!(e.message.contains(want), "{header}: {e}");
    }
}

#[test]
fn bad_expressions_are_errors_on_their_line() {
    for (store, want) in [
        ("y[i0] = frob(x[i0])", "unknown function `frob`"),
        ("y[i0] = (x[i0] ? x[i0])", "binary operator"),
        ("y[i0] = x[(i0) / 0]", "positive"),
        ("y[i0] = x[i0 + ]", "expected an index"),
        ("y[i0] = max(x[i0 * 4 + i5] for i5 < 4)", "is `i2`"),
        ("y[i0] = (x[i0] + 1.0", "expected `)`"),
        ("y[i0] = x[i0] x", "unexpected `x`"),
        ("y[i0]", "expected `=`"),
    ] {
        let text = format!(
            "kernel k map [batch, 4] (x: f32[batch, 4] r, y: f32[batch, 4] w) {{\n  \
             y[i0] = 0.0\n  {store}\n}}\n"
        );
        let e = error(&text);
        assert_eq!(e.line, 3, "{store}: {e}");
        assert!(e.message.contains(want), "{store}: {e}");
    }
}

#[test]
fn a_contraction_needs_its_four_lines_in_order() {
    let text = test_fixtures::dense_relu().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let swapped = [lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]].join("\n");
    let e = error(&swapped);
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("expected `a`"), "{e}");
}

/// Any prefix of a kernel's text, and the text with any one character removed, parses
/// or gives an error: never a panic.
#[test]
fn damaged_text_never_panics() {
    let text = every_construct().to_string();
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    for &i in &boundaries {
        let _ = parse_kernels(&text[..i]);
        let c = text[i..].chars().next().map_or(0, char::len_utf8);
        let damaged = format!("{}{}", &text[..i], &text[i + c..]);
        let _ = parse_kernels(&damaged);
    }
}

/// A part count far past what the text holds is an error at the missing part, not an
/// allocation sized by the count (found by the `kernel_ir` fuzz target).
#[test]
fn a_huge_part_count_is_an_error_at_the_first_missing_part() {
    for count in ["18446744073709551615", "1000000000000"] {
        let text = format!("kernel k parts {count} (x: f32[4] w) {{\n}}\n");
        let e = error(&text);
        assert!(e.message.contains("part 0"), "{count}: {e}");
    }
}

#[test]
fn gathers_and_scatter_adds_read_back_as_printed() {
    let text = "kernel k0_scatter_add scatter_add over [batch, 3] (ids: i32[batch, 3] r, g: f32[batch, 3, 4] r, t: f32[10, 4] w) {
  t[ids[i0 * 3 + i1], i2] += (g[(i0 * 3 + i1) * 4 + i2] * gather(t2, ids[i0 * 3 + i1], i2))
}
";
    let with_table = text.replace("t: f32[10, 4] w", "t: f32[10, 4] w, t2: f32[10, 4] r");
    let k = parse_kernel(&with_table).unwrap_or_else(|e| panic!("{e}"));
    k.validate().unwrap();
    assert_eq!(k.to_string(), with_table);
    let wrong_column = with_table.replace("i1], i2] +=", "i1], i1] +=");
    let e = parse_kernel(&wrong_column).unwrap_err();
    assert!(e.message.contains("the column is `i2`"), "{e}");
}

const WINDOWED: &str = "\
kernel k0_conv contract batch [batch] m 4 n 63 k 18 (w: f32[4, 2, 3, 3] r, x: f32[batch, 2, 7, 9] r, y: f32[batch, 4, 63] w) {
  a = w[0 + row * 18 + col * 1]
  b = x[i0 * 126 + window 2 x 7 x 9 kernel 3 x 3 stride 1 padding 1 dilation 1]
  acc = sum_k a[m, k] * b[k, n]
  y[row-major] = acc
}
";

#[test]
fn a_window_operand_reads_back_as_it_was_and_is_checked() {
    let k = parse_kernel(WINDOWED).expect("parses");
    k.validate().expect("a valid kernel");
    let KernelBody::Contract(c) = &k.body else {
        panic!("a contraction: {k:?}");
    };
    let w = c.b.window.as_deref().expect("a window");
    assert_eq!((w.channels, w.height, w.width, w.padding), (2, 7, 9, 1));
    assert_eq!(k.to_string(), WINDOWED);
    // A depth that is not the window's taps, and a window as the left operand, are
    // refused by validation.
    let deep = parse_kernel(&WINDOWED.replace("k 18", "k 17")).expect("parses");
    let e = deep.validate().expect_err("17 taps");
    assert!(e.message.contains("a window of 18 x 63"), "{e}");
    let mut left = k.clone();
    if let KernelBody::Contract(c) = &mut left.body {
        c.a.window = c.b.window.clone();
    }
    assert!(left.validate().is_err());
    // A damaged window is a parse error on its line.
    let e = error(&WINDOWED.replace("kernel 3 x 3", "kernel 3 by 3"));
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("window C x H x W"), "{e}");
}

#[test]
fn a_contraction_with_terms_reads_back_as_it_was() {
    let k = parse_kernel(STEP_WITH_TERM).expect("parses");
    let KernelBody::Contract(c) = &k.body else {
        panic!("a contraction: {k:?}");
    };
    assert_eq!(c.terms.len(), 1);
    assert_eq!(
        (c.terms[0].k, c.terms[0].a.buf, c.terms[0].b.buf),
        (Dim::Fixed(3), 3, 4)
    );
    k.validate().expect("valid");
    assert_eq!(k.to_string(), STEP_WITH_TERM);
    // The sum line must name every term.
    let e = error(&STEP_WITH_TERM.replace(" + sum_k a1[m, k] * b1[k, n]", ""));
    assert_eq!(e.line, 6, "{e}");
}

#[test]
fn only_an_unbatched_product_has_terms() {
    let batched = STEP_WITH_TERM
        .replace("batch [] m batch", "batch [2] m batch")
        .replace("h[0 +", "h[i0 * 0 +");
    let k = parse_kernel(&batched).expect("parses");
    let e = k.validate().expect_err("refused");
    assert!(e.message.contains("has terms"), "{e}");
}
