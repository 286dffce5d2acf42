//! Products of one row, `y[n] (+)= x[k] b[k, n]`: a recurrent step at batch 1, a dense
//! layer's batch-1 inference.
//!
//! `gemm` runs such a product through its general path: it packs the right-hand matrix
//! (row-major operand) or takes one dot product at a time through a narrow microkernel
//! (transposed operand). Measured on a 2-core AMD EPYC with AVX-512, one thread, the
//! operand in cache, `1 x 128 x 256` (half of W3's step, one thread's columns):
//! `gemm` 1.69 us (transposed) / 2.49 us (row-major), the loops below with 256-bit FMA
//! 1.39 us / 1.33 us. The bound is then reading the matrix once.
//!
//! Each output's sum is computed the same way wherever its column falls in a range (the
//! ranges a launch's threads take, see `launch::Job::run_by_columns`): a transposed
//! operand's column is one dot product over `k` (8 lanes, then the lanes summed in a fixed
//! order), a row-major one's a chain of fused multiply-adds over `k` in order. So results
//! do not depend on the split. Hosts without AVX2 and FMA, or operands with other strides,
//! take `gemm` as before ([`row_times_matrix`] returns false).

/// `dst[j] (+)= sum_k x[k * x_step] * b[k * b_rs + j * b_cs]` for `j` in `0..n`, when the
/// row is contiguous (`x_step == 1`) and `b` is either transposed (`b_rs == 1`) or
/// row-major (`b_cs == 1`) and the host has AVX2 and FMA; otherwise returns false and
/// does nothing. `accumulate` adds the products to what `dst` holds.
///
/// # Safety
/// `x` must address `k` values at step `x_step`, `b` every element named above, and `dst`
/// `n` values that nothing else accesses meanwhile (finite ones with `accumulate`).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn row_times_matrix(
    x: *const f32,
    x_step: isize,
    b: *const f32,
    (b_rs, b_cs): (isize, isize),
    k: usize,
    n: usize,
    dst: *mut f32,
    accumulate: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !computes(x_step, (b_rs, b_cs)) {
            return false;
        }
        if b_rs == 1 {
            // SAFETY: the features are present; the caller's contract.
            unsafe { x86::dots(x, b, b_cs, k, n, dst, accumulate) };
            return true;
        }
        if b_cs == 1 {
            // SAFETY: as above.
            unsafe { x86::axpys(x, b, b_rs, k, n, dst, accumulate) };
            return true;
        }
        false
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, x_step, b, b_rs, b_cs, k, n, dst, accumulate);
        false
    }
}

/// Whether [`row_times_matrix`] computes a row at step `x_step` times a matrix of these
/// strides on this host (a contiguous row, a matrix read by rows or by columns, AVX2 and
/// FMA), rather than returning false.
pub(crate) fn computes(x_step: isize, (b_rs, b_cs): (isize, isize)) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x_step == 1 && (b_rs == 1 || b_cs == 1) && avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x_step, b_rs, b_cs);
        false
    }
}

/// Whether the host has AVX2 and FMA (`is_x86_feature_detected!` caches what it finds).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Outputs per group of dot products: independent FMA chains that hide the latency.
    const DOTS: usize = 8;
    /// Columns per group of row-major outputs: 8 accumulators of 8 lanes.
    const AXPY_COLUMNS: usize = 64;

    /// The lanes of `v` summed in a fixed order.
    #[target_feature(enable = "avx2,fma")]
    fn lane_sum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        _mm_cvtss_f32(h)
    }

    /// The mask loading the first `rest` (< 8) lanes.
    #[target_feature(enable = "avx2,fma")]
    fn tail_mask(rest: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rest as i32), lanes)
    }

    #[target_feature(enable = "avx2,fma")]
    fn store(dst: *mut f32, value: f32, accumulate: bool) {
        // SAFETY: `dst` is one of the caller's outputs.
        unsafe { *dst = if accumulate { *dst + value } else { value } };
    }

    /// Transposed `b`: column `j` is `k` contiguous values from `b + j * b_cs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(
        x: *const f32,
        b: *const f32,
        b_cs: isize,
        k: usize,
        n: usize,
        dst: *mut f32,
        accumulate: bool,
    ) {
        let mut j = 0;
        // SAFETY (both loops): the caller's contract bounds every load and store.
        while j + DOTS <= n {
            let sums = unsafe { dot_sums::<DOTS>(x, b.offset(j as isize * b_cs), b_cs, k) };
            for (d, sum) in sums.into_iter().enumerate() {
                store(unsafe { dst.add(j + d) }, sum, accumulate);
            }
            j += DOTS;
        }
        // The same sums, one column at a time.
        for j in j..n {
            let [sum] = unsafe { dot_sums::<1>(x, b.offset(j as isize * b_cs), b_cs, k) };
            store(unsafe { dst.add(j) }, sum, accumulate);
        }
    }

    /// The dot products of `x` with `D` columns from `b` (at step `b_cs`), `k` long: each
    /// in 8 lanes over `k` in order, the tail loaded under a mask, then the lanes summed,
    /// the same operations whatever `D`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_sums<const D: usize>(
        x: *const f32,
        b: *const f32,
        b_cs: isize,
        k: usize,
    ) -> [f32; D] {
        let full = k / 8 * 8;
        let column = |d: usize| b.wrapping_offset(d as isize * b_cs);
        let mut acc = [_mm256_setzero_ps(); D];
        // SAFETY (whole body): the caller's contract bounds every load.
        unsafe {
            let mut kk = 0;
            while kk < full {
                let xv = _mm256_loadu_ps(x.add(kk));
                for (d, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(column(d).add(kk)), *a);
                }
                kk += 8;
            }
            if full < k {
                let mask = tail_mask(k - full);
                let xv = _mm256_maskload_ps(x.add(full), mask);
                for (d, a) in acc.iter_mut().enumerate() {
                    let bv = _mm256_maskload_ps(column(d).add(full), mask);
                    *a = _mm256_fmadd_ps(xv, bv, *a);
                }
            }
        }
        acc.map(|a| lane_sum(a))
    }

    /// Row-major `b`: row `kk` is `n` contiguous values from `b + kk * b_rs`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpys(
        x: *const f32,
        b: *const f32,
        b_rs: isize,
        k: usize,
        n: usize,
        dst: *mut f32,
        accumulate: bool,
    ) {
        // SAFETY (whole body): the caller's contract bounds every load and store.
        unsafe {
            let row = |kk: usize| b.offset(kk as isize * b_rs);
            let mut j = 0;
            while j + AXPY_COLUMNS <= n {
                let mut acc = [_mm256_setzero_ps(); AXPY_COLUMNS / 8];
                for kk in 0..k {
                    let s = _mm256_set1_ps(*x.add(kk));
                    let r = row(kk).add(j);
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(s, _mm256_loadu_ps(r.add(8 * v)), *a);
                    }
                }
                for (v, a) in acc.iter().enumerate() {
                    let out = dst.add(j + 8 * v);
                    let sum = match accumulate {
                        true => _mm256_add_ps(_mm256_loadu_ps(out), *a),
                        false => *a,
                    };
                    _mm256_storeu_ps(out, sum);
                }
                j += AXPY_COLUMNS;
            }
            // The same chain of fused multiply-adds, one column at a time.
            for j in j..n {
                let mut a = 0.0f32;
                for kk in 0..k {
                    a = (*x.add(kk)).mul_add(*row(kk).add(j), a);
                }
                store(dst.add(j), a, accumulate);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x b` in f64, b given by its element function.
    fn reference(x: &[f32], k: usize, n: usize, b: impl Fn(usize, usize) -> f32) -> Vec<f64> {
        (0..n)
            .map(|j| (0..k).map(|i| f64::from(x[i]) * f64::from(b(i, j))).sum())
            .collect()
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Every shape's tails: `k` and `n` below, at and past the vector and group widths.
    #[test]
    fn one_row_products_match_f64_sums_and_do_not_depend_on_the_column_range() {
        for &(k, n) in &[(1, 1), (7, 9), (8, 8), (13, 70), (128, 512), (33, 129)] {
            let x = values(k, 1);
            let b = values(k * n, 2);
            for transposed in [true, false] {
                // Transposed: column j at j * k; row-major: row i at i * n.
                let strides = match transposed {
                    true => (1, k as isize),
                    false => (n as isize, 1),
                };
                let at = |i: usize, j: usize| b[i * strides.0 as usize + j * strides.1 as usize];
                let want = reference(&x, k, n, at);
                let mut whole = vec![0.0f32; n];
                // SAFETY: the slices hold every element the strides name.
                let ran = unsafe {
                    row_times_matrix(
                        x.as_ptr(),
                        1,
                        b.as_ptr(),
                        strides,
                        k,
                        n,
                        whole.as_mut_ptr(),
                        false,
                    )
                };
                if !ran {
                    // A host without AVX2 and FMA: `gemm` computes these.
                    return;
                }
                for (j, (&got, &want)) in whole.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "k {k} n {n} transposed {transposed} column {j}: {got} vs {want}"
                    );
                }
                // Columns from 16 on, as a second thread computes them, and accumulated
                // onto ones.
                if n > 16 {
                    let mut part = vec![1.0f32; n - 16];
                    let offset = 16 * if transposed { strides.1 } else { 1 };
                    // SAFETY: as above, from column 16.
                    unsafe {
                        row_times_matrix(
                            x.as_ptr(),
                            1,
                            b.as_ptr().offset(offset),
                            strides,
                            k,
                            n - 16,
                            part.as_mut_ptr(),
                            true,
                        )
                    };
                    for (got, whole) in part.iter().zip(&whole[16..]) {
                        assert_eq!(*got, 1.0 + whole, "k {k} n {n} transposed {transposed}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_strides_are_left_to_gemm() {
        let (x, b) = (values(4, 1), values(16, 2));
        let mut out = vec![7.0f32; 4];
        // SAFETY: a strided row is refused before anything is read.
        let ran = unsafe {
            row_times_matrix(
                x.as_ptr(),
                2,
                b.as_ptr(),
                (4, 1),
                2,
                4,
                out.as_mut_ptr(),
                false,
            )
        };
        assert!(!ran);
        assert_eq!(out, vec![7.0; 4]);
    }
}
