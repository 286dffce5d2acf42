//! The bounds checker on small kernels written as text: one rule each, in range and out.

use super::*;
use crate::parse::parse_kernel;
use crate::test_fixtures::STEP_WITH_TERM;

fn kernel(text: &str) -> Kernel {
    let k = parse_kernel(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    k.validate().unwrap();
    k
}

fn refused(k: &Kernel, batch: u64) -> String {
    match check_bounds(k, batch) {
        Ok(()) => panic!("accepted at batch {batch}:\n{k}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_row_major_map_is_in_range_at_every_batch() {
    let k = kernel(
        "kernel add map [batch, 3] (x: f32[batch, 3] r, b: f32[3] r, y: f32[batch, 3] w) {
           y[i0 * 3 + i1] = (x[i0 * 3 + i1] + b[i1])
         }",
    );
    for batch in [1, 7, 64, 1 << 40] {
        check_bounds(&k, batch).unwrap();
    }
}

#[test]
fn a_load_one_past_the_end_is_refused_with_its_range() {
    let k = kernel(
        "kernel shift map [batch, 3] (x: f32[batch, 3] r, y: f32[batch, 3] w) {
           y[i0 * 3 + i1] = x[i0 * 3 + i1 + 1]
         }",
    );
    let e = refused(&k, 7);
    assert!(e.contains("kernel `shift`: at batch size 7"), "{e}");
    assert!(e.contains("load from `x`"), "{e}");
    assert!(
        e.contains("[1, 21]") && e.contains("its 21 element(s)"),
        "{e}"
    );
}

#[test]
fn a_negative_store_index_is_refused() {
    let k = kernel(
        "kernel back map [4] (x: f32[4] r, y: f32[4] w) {
           y[i0 + -1] = x[i0]
         }",
    );
    assert!(refused(&k, 1).contains("store to `y`"));
}

#[test]
fn an_index_growing_with_the_batch_is_refused_only_where_it_leaves_the_buffer() {
    // Reads x[batch - 1 + i0]: inside 16 elements only while batch <= 13.
    let k = kernel(
        "kernel tail map [4] (x: f32[16] r, y: f32[4] w) {
           y[i0] = x[batch + -1 + i0]
         }",
    );
    check_bounds(&k, 13).unwrap();
    assert!(refused(&k, 14).contains("[13, 16]"));
}

#[test]
fn both_arms_of_a_select_are_checked() {
    let k = kernel(
        "kernel guarded map [4] (x: f32[4] r, y: f32[4] w) {
           y[i0] = select((float(i0) < 3), x[i0 + 1], 0)
         }",
    );
    assert!(refused(&k, 1).contains("load from `x`"));
}

#[test]
fn a_wrapped_index_is_in_range_where_a_shifted_one_is_not() {
    // Padding 1 over 5 columns: column i0 - 1 is read as (i0 + 4) % 5.
    let k = kernel(
        "kernel pad map [7] (x: f32[5] r, y: f32[7] w) {
           y[i0] = x[(i0 + 4) % 5]
         }",
    );
    check_bounds(&k, 1).unwrap();
}

#[test]
fn floor_division_and_remainder_follow_the_irs_semantics() {
    // i0 in [0, 11]: (i0 - 3) / 4 in [-1, 2] (floor), so the load may reach -1.
    let k = kernel(
        "kernel div map [12] (x: f32[3] r, y: f32[12] w) {
           y[i0] = x[(i0 + -3) / 4]
         }",
    );
    assert!(refused(&k, 1).contains("[-1, 2]"));
    // The Euclidean remainder is never negative.
    let k = kernel(
        "kernel rem map [12] (x: f32[4] r, y: f32[12] w) {
           y[i0] = x[(i0 + -3) % 4]
         }",
    );
    check_bounds(&k, 1).unwrap();
}

#[test]
fn a_product_takes_the_extreme_of_four_corners() {
    // (i0 - 2) * (i1 - 2) over [0, 3] x [0, 3] ranges over [-2, 4]: not a valid index.
    let k = kernel(
        "kernel corners map [4, 4] (x: f32[100] r, y: f32[16] w) {
           y[i0 * 4 + i1] = x[(i0 + -2) * (i1 + -2)]
         }",
    );
    assert!(refused(&k, 1).contains("[-2, 4]"));
}

#[test]
fn an_empty_space_runs_nothing_and_is_not_checked() {
    let k = kernel(
        "kernel empty map [batch, 0] (x: f32[1] r, y: f32[1] w) {
           y[i1 + 5] = x[i1 + 9]
         }",
    );
    check_bounds(&k, 3).unwrap();
}

#[test]
fn nested_reductions_bring_their_variables_into_scope() {
    let ok = kernel(
        "kernel rowsum map [batch] (x: f32[batch, 8] r, y: f32[batch] w) {
           y[i0] = sum(x[i0 * 8 + i1] for i1 < 8)
         }",
    );
    check_bounds(&ok, 64).unwrap();
    let bad = kernel(
        "kernel rowsum map [batch] (x: f32[batch, 8] r, y: f32[batch] w) {
           y[i0] = sum(x[i0 * 8 + i1] for i1 < 9)
         }",
    );
    assert!(refused(&bad, 64).contains("load from `x`"));
}

#[test]
fn a_reduction_checks_its_value_over_the_reduced_variables() {
    let k = kernel(
        "kernel colsum reduce [4] over [batch] (x: f32[batch, 4] r, y: f32[4] w) {
           acc = sum(x[i1 * 4 + i0 + 1])
           y[i0] = acc
         }",
    );
    let e = refused(&k, 7);
    assert!(e.contains("[1, 28]"), "{e}");
}

#[test]
fn an_index_beyond_64_bits_is_refused() {
    let k = kernel(
        "kernel huge map [batch] (x: f32[batch] r, y: f32[batch] w) {
           y[i0] = x[i0 * 4611686018427387904 * 4]
         }",
    );
    assert!(refused(&k, 2).contains("beyond 64-bit"));
}

const DENSE: &str = "kernel dense contract batch [] m batch n 2 k 4 \
    (x: f32[batch, 4] r, w: f32[4, 2] r, y: f32[batch, 2] w) {
       a = x[0 + row * 4 + col * 1]
       b = w[0 + row * 2 + col * 1]
       acc = sum_k a[m, k] * b[k, n]
       y[row-major] = acc
     }";

#[test]
fn a_contraction_with_true_strides_is_in_range() {
    let k = kernel(DENSE);
    for batch in [1, 7, 64] {
        check_bounds(&k, batch).unwrap();
    }
}

#[test]
fn a_contraction_with_a_lying_stride_or_offset_is_refused() {
    let stride = kernel(&DENSE.replace("row * 4 +", "row * 5 +"));
    let e = refused(&stride, 7);
    assert!(
        e.contains("the left operand `x`") && e.contains("[0, 33]"),
        "{e}"
    );
    let offset = kernel(&DENSE.replace("w[0 +", "w[1 +"));
    assert!(refused(&offset, 1).contains("the right operand `w`"));
    let output = kernel(&DENSE.replace("y: f32[batch, 2] w", "y: f32[batch, 1] w"));
    assert!(refused(&output, 7).contains("the product written to `y`"));
}

#[test]
fn a_batched_contraction_checks_every_batch_index() {
    // Eight [3, 4] x [4, 5] products, the left operands 12 apart: the last one ends at
    // element 95 of 96; a stride of 13 would run past it.
    let text = "kernel bmm contract batch [8] m 3 n 5 k 4 \
        (x: f32[8, 3, 4] r, w: f32[8, 4, 5] r, y: f32[8, 3, 5] w) {
           a = x[i0 * 12 + row * 4 + col * 1]
           b = w[i0 * 20 + row * 5 + col * 1]
           acc = sum_k a[m, k] * b[k, n]
           y[row-major] = acc
         }";
    check_bounds(&kernel(text), 1).unwrap();
    let e = refused(&kernel(&text.replace("i0 * 12", "i0 * 13")), 1);
    assert!(e.contains("[0, 102]"), "{e}");
}

const GATHER: &str = "kernel lookup map [batch, 3, 4] (t: f32[10, 4] r, ids: i32[batch, 3] r, y: f32[batch, 3, 4] w) {
   y[(i0 * 3 + i1) * 4 + i2] = gather(t, ids[i0 * 3 + i1], i2)
 }";

#[test]
fn a_gather_is_in_range_whatever_the_ids_hold() {
    // The row is the id's, checked when the kernel runs: only the id's load and the
    // column are proven here.
    for batch in [1, 7, 64] {
        check_bounds(&kernel(GATHER), batch).unwrap();
    }
}

#[test]
fn a_gather_column_outside_the_table_is_refused() {
    let k = kernel(&GATHER.replace(", i2)", ", i2 + 1)"));
    let e = refused(&k, 1);
    assert!(e.contains("column `i2 + 1` of table `t`"), "{e}");
    assert!(e.contains("[1, 4]") && e.contains("its 4 column(s)"), "{e}");
}

#[test]
fn a_scatter_add_reading_its_ids_past_their_end_is_refused() {
    let text = "kernel grad scatter_add over [batch, 3] (ids: i32[batch, 3] r, g: f32[batch, 3, 4] r, t: f32[10, 4] w) {
       t[ids[i0 * 3 + i1], i2] += g[(i0 * 3 + i1) * 4 + i2]
     }";
    check_bounds(&kernel(text), 5).unwrap();
    let past = kernel(&text.replace("ids[i0 * 3 + i1]", "ids[i0 * 3 + i1 + 1]"));
    assert!(refused(&past, 5).contains("load of an id from `ids`"));
}

#[test]
fn a_window_reaches_its_whole_image_and_no_further() {
    let text = "kernel conv contract batch [batch] m 4 n 63 k 18 (w: f32[4, 2, 3, 3] r, x: f32[batch, 2, 7, 9] r, y: f32[batch, 4, 63] w) {
           a = w[0 + row * 18 + col * 1]
           b = x[i0 * 126 + window 2 x 7 x 9 kernel 3 x 3 stride 1 padding 1 dilation 1]
           acc = sum_k a[m, k] * b[k, n]
           y[row-major] = acc
         }";
    for batch in [1, 5] {
        check_bounds(&kernel(text), batch).unwrap();
    }
    // One image further along per batch index: the last one ends past the buffer.
    let e = refused(&kernel(&text.replace("i0 * 126 +", "i0 * 126 + 1 +")), 5);
    assert!(e.contains("the right operand `x`"), "{e}");
    assert!(e.contains("a window over"), "{e}");
}

#[test]
fn a_terms_operands_are_checked_over_its_own_depth() {
    let k = kernel(STEP_WITH_TERM);
    for batch in [1, 5] {
        check_bounds(&k, batch).unwrap();
    }
    // The term's depth is 3: a row stride of 4 runs `x`'s last row past its end.
    let e = refused(
        &kernel(&STEP_WITH_TERM.replace("row * 3 +", "row * 4 +")),
        5,
    );
    assert!(e.contains("the left operand of term 1 `x`"), "{e}");
    let e = refused(&kernel(&STEP_WITH_TERM.replace("v[0 +", "v[1 +")), 1);
    assert!(e.contains("the right operand of term 1 `v`"), "{e}");
}
