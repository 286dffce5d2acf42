//! Products whose right-hand operand is a convolution's window over an image
//! ([`ImageWindow`]): `dst[r, q] = sum_t a[r, t] x window(t, q)`, the im2col matrix read
//! in place instead of stored.
//!
//! Stored, that matrix is `kh kw` times the image: W2's first convolution wrote and read
//! back 3.7 MB at batch 64 (109 us of a 0.52 ms `infer`) to feed a product of 6 rows,
//! which `gemm` ran at 100 GFLOP/s. Two ways here, both writing every output once:
//!
//! - **Direct** (stride 1, AVX2 and FMA, at most [`DIRECT_MAX_ROWS`] rows): a tile of up
//!   to 6 rows (output channels) by two vectors of 8 positions (16 of one output row, or
//!   8 of two rows) is 12 accumulators of 8 lanes; each tap adds one unaligned load of
//!   the image per 8 positions times a broadcast weight per row. Positions whose taps reach the padding
//!   (or a range's last few) are summed one at a time, in the same order with the same
//!   fused multiply-adds, so an output does not depend on which way, or which thread's
//!   column range, computed it.
//! - **Panels** (any other window or host): the window's columns in chunks of at most
//!   [`PANEL_FLOATS`] elements, each copied into a per-thread panel that stays in cache
//!   and multiplied by `gemm`.

use strata_kernels::ir::ImageWindow;

/// The most rows (output channels) the direct way takes: beyond it `gemm`'s packing and
/// cache blocking of the weights pay for the panel copy.
const DIRECT_MAX_ROWS: usize = 64;

/// The most elements of one panel (256 KB), a share of a core's L2 cache.
const PANEL_FLOATS: usize = 1 << 16;

/// What one product over a window reads and writes: `dst[r * dst_rs + (q - cols.0)] =
/// sum_t a[r * a_rs + t * a_cs] * window(t, q)` for rows `r` in `0..rows` and columns `q`
/// in `cols.0..cols.1`, the window over the image at `image`.
#[derive(Clone, Copy)]
pub(crate) struct WindowOperands {
    pub a: *const f32,
    /// `(a_rs, a_cs)`.
    pub a_strides: (isize, isize),
    pub image: *const f32,
    pub rows: usize,
    pub cols: (usize, usize),
    /// Row `0`, column `cols.0` of the output.
    pub dst: *mut f32,
    pub dst_rs: isize,
}

/// The product `p` describes, over the window `w`.
///
/// # Safety
/// `p.a` must address `p.rows` rows of `w.rows()` values at its strides, `p.image` the
/// window's whole image, and `p.dst` those rows and columns, which nothing else accesses
/// meanwhile. The window must be valid ([`ImageWindow::out_size`] is `Some`).
pub(crate) unsafe fn window_product(p: &WindowOperands, w: &ImageWindow) {
    let Some(g) = Geometry::of(w) else {
        return;
    };
    if p.rows == 0 || p.cols.0 >= p.cols.1 {
        return;
    }
    if g.taps == 0 {
        // An image of no channels: every sum is empty.
        for r in 0..p.rows {
            let row = p.dst.wrapping_offset(r as isize * p.dst_rs);
            // SAFETY: the caller guarantees these outputs.
            unsafe { std::ptr::write_bytes(row, 0, p.cols.1 - p.cols.0) };
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if w.stride == 1 && p.rows <= DIRECT_MAX_ROWS && super::gemv::avx2_fma() {
        // SAFETY: the features are present; the caller's contract.
        unsafe { x86::direct(p, &g) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { panels(p, &g) };
}

/// A window's sizes as signed offsets.
struct Geometry {
    window: ImageWindow,
    channels: isize,
    height: isize,
    width: isize,
    kh: isize,
    kw: isize,
    stride: isize,
    padding: isize,
    dilation: isize,
    out_w: isize,
    /// `channels * kh * kw`: the matrix's rows.
    taps: usize,
}

impl Geometry {
    fn of(w: &ImageWindow) -> Option<Geometry> {
        let (_, out_w) = w.out_size()?;
        let i = |v: u64| isize::try_from(v).ok();
        i(w.image_len()?)?;
        Some(Geometry {
            window: *w,
            channels: i(w.channels)?,
            height: i(w.height)?,
            width: i(w.width)?,
            kh: i(w.kh)?,
            kw: i(w.kw)?,
            stride: i(w.stride)?,
            padding: i(w.padding)?,
            dilation: i(w.dilation)?,
            out_w: i(out_w)?,
            taps: usize::try_from(w.rows()?).ok()?,
        })
    }

    /// The taps' kernel rows `i` whose image row `y s + i d - padding` is inside the
    /// image, for output row `y`: `lo..hi`.
    fn kernel_rows(&self, y: isize) -> (isize, isize) {
        let top = y * self.stride - self.padding;
        // The first i with top + i d >= 0, the first with top + i d >= height.
        let first = |bound: isize| {
            let ahead = (bound - top).max(0);
            ((ahead + self.dilation - 1) / self.dilation).min(self.kh)
        };
        (first(0), first(self.height))
    }

    /// [`ImageWindow::tap_element`] at these (in-range, so non-negative) coordinates.
    fn element(&self, (c, i, j): (isize, isize, isize), (y, x): (isize, isize)) -> Option<isize> {
        let u = |v: isize| v as u64;
        let e = self.window.tap_element((u(c), u(i), u(j)), (u(y), u(x)))?;
        // Inside the image, whose size `Geometry::of` checked fits an `isize`.
        Some(e as isize)
    }
}

thread_local! {
    /// A thread's panel: its storage is kept between products.
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`window_product`] by panels of columns copied out of the image, each multiplied by
/// `gemm`.
///
/// # Safety
/// As for [`window_product`].
unsafe fn panels(p: &WindowOperands, g: &Geometry) {
    let cols = p.cols;
    let chunk = (PANEL_FLOATS / g.taps).max(16) / 16 * 16;
    PANEL.with_borrow_mut(|panel| {
        let mut first = cols.0;
        while first < cols.1 {
            let end = (first + chunk).min(cols.1);
            let width = end - first;
            panel.clear();
            panel.resize(g.taps * width, 0.0);
            let mut t = 0;
            for c in 0..g.channels {
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let row = &mut panel[t * width..][..width];
                        let (mut y, mut x) = (first as isize / g.out_w, first as isize % g.out_w);
                        for v in row.iter_mut() {
                            if let Some(e) = g.element((c, i, j), (y, x)) {
                                // SAFETY: `element` is inside the image, which the caller
                                // guarantees `image` addresses.
                                *v = unsafe { *p.image.offset(e) };
                            }
                            x += 1;
                            if x == g.out_w {
                                (y, x) = (y + 1, 0);
                            }
                        }
                        t += 1;
                    }
                }
            }
            // SAFETY: the caller guarantees `a` and these columns of `dst`; the panel is
            // `taps x width`, row-major. `read_dst = false`: `dst := a x panel`.
            unsafe {
                gemm::gemm(
                    p.rows,
                    width,
                    g.taps,
                    p.dst.wrapping_add(first - cols.0),
                    1,
                    p.dst_rs,
                    false,
                    p.a,
                    p.a_strides.1,
                    p.a_strides.0,
                    panel.as_ptr(),
                    1,
                    width as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
            first = end;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Geometry, WindowOperands};
    use std::arch::x86_64::*;

    /// The most rows (output channels) of a tile: with two vectors of positions, 12
    /// accumulators, two loads and a broadcast fill 15 of the 16 vector registers.
    const TILE_ROWS: usize = 6;

    /// [`super::window_product`] for a stride-1 window: rows in blocks of at most
    /// [`TILE_ROWS`], positions by vectors of 8 along an output row, two at a time (16
    /// along one row, or 8 of two rows one above the other: W2's second convolution has
    /// rows of 8), the rest one position at a time.
    ///
    /// # Safety
    /// As for [`super::window_product`], with `g`'s stride 1, on a host with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn direct(p: &WindowOperands, g: &Geometry) {
        let WindowOperands {
            a,
            a_strides: (a_rs, a_cs),
            image,
            rows,
            cols,
            dst,
            dst_rs,
        } = *p;
        // Output positions `x` whose taps all fall inside the image's width.
        let span = (g.kw - 1) * g.dilation;
        let inner = (g.padding, g.width + g.padding - span);
        let blocks = rows.div_ceil(TILE_ROWS);
        let (first, end) = (cols.0 as isize, cols.1 as isize);
        for block in 0..blocks {
            let (r0, r1) = (rows * block / blocks, rows * (block + 1) / blocks);
            let tile = Tile {
                a: a.wrapping_offset(r0 as isize * a_rs),
                a_strides: (a_rs, a_cs),
                image,
                g,
                rows: r1 - r0,
                dst: dst.wrapping_offset(r0 as isize * dst_rs - first),
                dst_rs,
                inner,
            };
            let mut q = first;
            while q < end {
                let (y, x0) = (q / g.out_w, q % g.out_w);
                let x_end = g.out_w.min(x0 + end - q);
                let whole_pair = x0 == 0 && q + 2 * g.out_w <= end;
                if whole_pair && g.kernel_rows(y) == g.kernel_rows(y + 1) {
                    // SAFETY: forwarded from the caller; rows y and y + 1 are in range.
                    unsafe { tile.two_rows(y) };
                    q += 2 * g.out_w;
                } else {
                    // SAFETY: forwarded from the caller.
                    unsafe { tile.row(y, (x0, x_end)) };
                    q += x_end - x0;
                }
            }
        }
    }

    /// A block of rows (output channels) of the product.
    struct Tile<'g> {
        /// The block's first row of the left-hand operand.
        a: *const f32,
        a_strides: (isize, isize),
        image: *const f32,
        g: &'g Geometry,
        rows: usize,
        /// The block's first row of the output, at position 0.
        dst: *mut f32,
        dst_rs: isize,
        /// The positions `x` whose taps all fall inside the image's width: `lo..hi`.
        inner: (isize, isize),
    }

    impl Tile<'_> {
        /// Positions `xs.0..xs.1` of output row `y`: 16 then 8 at a time inside, the
        /// rest one by one.
        ///
        /// # Safety
        /// As for `direct`, for these positions.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn row(&self, y: isize, (x0, x_end): (isize, isize)) {
            let (lo, hi) = (self.inner.0.clamp(x0, x_end), self.inner.1.clamp(x0, x_end));
            let kernel_rows = self.g.kernel_rows(y);
            let mut x = x0;
            while x < lo {
                // SAFETY: forwarded from the caller.
                unsafe { self.one(y, x) };
                x += 1;
            }
            while x + 16 <= hi {
                // SAFETY: positions x..x + 16 of row y take every tap of `kernel_rows`
                // inside the image.
                unsafe { self.lanes::<2>(kernel_rows, [(y, x), (y, x + 8)]) };
                x += 16;
            }
            while x + 8 <= hi {
                // SAFETY: as above, for 8 positions.
                unsafe { self.lanes::<1>(kernel_rows, [(y, x)]) };
                x += 8;
            }
            while x < x_end {
                // SAFETY: forwarded from the caller.
                unsafe { self.one(y, x) };
                x += 1;
            }
        }

        /// Output rows `y` and `y + 1`, whose taps reach the same kernel rows: 8
        /// positions of each at a time inside, the rest one by one.
        ///
        /// # Safety
        /// As for `direct`, for both rows.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn two_rows(&self, y: isize) {
            let (lo, hi) = (self.inner.0.max(0), self.inner.1.min(self.g.out_w));
            let kernel_rows = self.g.kernel_rows(y);
            let mut x = 0;
            while x < lo {
                // SAFETY: forwarded from the caller.
                unsafe { (self.one(y, x), self.one(y + 1, x)) };
                x += 1;
            }
            while x + 8 <= hi {
                // SAFETY: as in `row`, for 8 positions of both rows.
                unsafe { self.lanes::<2>(kernel_rows, [(y, x), (y + 1, x)]) };
                x += 8;
            }
            while x < self.g.out_w {
                // SAFETY: forwarded from the caller.
                unsafe { (self.one(y, x), self.one(y + 1, x)) };
                x += 1;
            }
        }

        /// The weight of row `r` for tap `t`.
        ///
        /// # Safety
        /// `r` and `t` in range.
        #[inline(always)]
        unsafe fn weight(&self, r: usize, t: isize) -> f32 {
            let (rs, cs) = self.a_strides;
            // SAFETY: the caller's contract.
            unsafe { *self.a.offset(r as isize * rs + t * cs) }
        }

        /// `V` vectors of 8 positions, each starting at one `(y, x)`, by lanes.
        ///
        /// # Safety
        /// As for `direct`; every tap of `kernel_rows` of these positions is inside the
        /// image.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn lanes<const V: usize>(
            &self,
            kernel_rows: (isize, isize),
            at: [(isize, isize); V],
        ) {
            match self.rows {
                6 => unsafe { self.lanes_of::<6, V>(kernel_rows, at) },
                5 => unsafe { self.lanes_of::<5, V>(kernel_rows, at) },
                4 => unsafe { self.lanes_of::<4, V>(kernel_rows, at) },
                3 => unsafe { self.lanes_of::<3, V>(kernel_rows, at) },
                2 => unsafe { self.lanes_of::<2, V>(kernel_rows, at) },
                _ => unsafe { self.lanes_of::<1, V>(kernel_rows, at) },
            }
        }

        /// [`Tile::lanes`] for `R` rows: `R x V` accumulators of 8 lanes.
        ///
        /// # Safety
        /// As for [`Tile::lanes`], with `R == self.rows`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn lanes_of<const R: usize, const V: usize>(
            &self,
            (i_lo, i_hi): (isize, isize),
            at: [(isize, isize); V],
        ) {
            let g = self.g;
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let plane = g.height * g.width;
            // Each vector's image position of tap (0, 0, 0) (maybe outside the image).
            let origin = at.map(|(y, x)| (y - g.padding) * g.width + x - g.padding);
            for c in 0..g.channels {
                for i in i_lo..i_hi {
                    let tap_row = c * plane + i * g.dilation * g.width;
                    let t0 = (c * g.kh + i) * g.kw;
                    for j in 0..g.kw {
                        let tap = tap_row + j * g.dilation;
                        let mut xs = [_mm256_setzero_ps(); V];
                        for (x, origin) in xs.iter_mut().zip(&origin) {
                            // SAFETY: the vector's 8 positions take tap (c, i, j) inside
                            // the image.
                            *x = unsafe { _mm256_loadu_ps(self.image.offset(origin + tap)) };
                        }
                        for (r, acc) in acc.iter_mut().enumerate() {
                            // SAFETY: row r < R and tap t0 + j of the operand.
                            let w = _mm256_set1_ps(unsafe { self.weight(r, t0 + j) });
                            for (acc, x) in acc.iter_mut().zip(&xs) {
                                *acc = _mm256_fmadd_ps(w, *x, *acc);
                            }
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (acc, (y, x)) in acc.iter().zip(at) {
                    let q = y * g.out_w + x;
                    let out = self.dst.wrapping_offset(r as isize * self.dst_rs + q);
                    // SAFETY: the caller guarantees these outputs.
                    unsafe { _mm256_storeu_ps(out, *acc) };
                }
            }
        }

        /// Position `(y, x)`, each row one sum over the taps inside the image in the
        /// order and with the fused multiply-adds of [`Tile::lanes_of`].
        ///
        /// # Safety
        /// As for `direct`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn one(&self, y: isize, x: isize) {
            let g = self.g;
            let (i_lo, i_hi) = g.kernel_rows(y);
            for r in 0..self.rows {
                let mut sum = 0.0f32;
                for c in 0..g.channels {
                    for i in i_lo..i_hi {
                        for j in 0..g.kw {
                            if let Some(e) = g.element((c, i, j), (y, x)) {
                                let t = (c * g.kh + i) * g.kw + j;
                                // SAFETY: an element inside the image; row r and tap t of
                                // the operand.
                                let (w, v) = unsafe { (self.weight(r, t), *self.image.offset(e)) };
                                sum = w.mul_add(v, sum);
                            }
                        }
                    }
                }
                let q = y * g.out_w + x;
                // SAFETY: the caller guarantees this output.
                unsafe { *self.dst.offset(r as isize * self.dst_rs + q) = sum };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in `f64` straight from the definition, for `rows x taps` weights.
    fn reference(a: &[f32], image: &[f32], w: &ImageWindow, rows: usize) -> Vec<f64> {
        let (taps, cols) = (w.rows().unwrap(), w.cols().unwrap());
        let mut out = vec![0.0; rows * cols as usize];
        for r in 0..rows {
            for q in 0..cols {
                out[r * cols as usize + q as usize] = (0..taps)
                    .filter_map(|t| {
                        let e = w.element(t, q)?;
                        Some(a[r * taps as usize + t as usize] as f64 * image[e as usize] as f64)
                    })
                    .sum();
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
            .map(|v| v as f32 / 500.0 - 1.0)
            .collect()
    }

    fn product(w: &ImageWindow, rows: usize, cols: (usize, usize)) -> (Vec<f32>, Vec<f64>) {
        let taps = w.rows().unwrap() as usize;
        let n = w.cols().unwrap() as usize;
        let a = values(rows * taps, 7);
        let image = values(w.image_len().unwrap() as usize, 11);
        let mut dst = vec![f32::NAN; rows * n];
        let p = WindowOperands {
            a: a.as_ptr(),
            a_strides: (taps as isize, 1),
            image: image.as_ptr(),
            rows,
            cols,
            dst: dst.as_mut_ptr().wrapping_add(cols.0),
            dst_rs: n as isize,
        };
        // SAFETY: the operand, image and output are the sizes the window names.
        unsafe { window_product(&p, w) };
        (dst, reference(&a, &image, w, rows))
    }

    fn window(c: u64, hw: (u64, u64), k: (u64, u64), s: u64, p: u64, d: u64) -> ImageWindow {
        ImageWindow {
            channels: c,
            height: hw.0,
            width: hw.1,
            kh: k.0,
            kw: k.1,
            stride: s,
            padding: p,
            dilation: d,
        }
    }

    #[test]
    fn windowed_products_match_the_definition_in_every_geometry() {
        let cases = [
            (window(1, (28, 28), (5, 5), 1, 0, 1), 6),
            (window(6, (12, 12), (5, 5), 1, 0, 1), 16),
            (window(3, (9, 11), (3, 3), 1, 1, 1), 7),
            (window(2, (10, 13), (3, 2), 1, 2, 2), 13),
            (window(3, (9, 11), (3, 3), 2, 1, 1), 5),
            (window(2, (30, 30), (3, 3), 1, 1, 1), 70),
        ];
        for (w, rows) in cases {
            let n = w.cols().unwrap() as usize;
            let (got, want) = product(&w, rows, (0, n));
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()),
                    "{w:?}, {rows} rows: output {i} is {g}, want {r}"
                );
            }
        }
    }

    #[test]
    fn a_window_over_no_channels_writes_zeros() {
        let (got, _) = product(&window(0, (5, 5), (3, 3), 1, 1, 1), 2, (0, 25));
        assert!(got.iter().all(|v| *v == 0.0), "{got:?}");
    }

    #[test]
    fn a_range_of_columns_gives_the_whole_products_outputs_bit_for_bit() {
        for w in [
            window(1, (28, 28), (5, 5), 1, 0, 1),
            window(6, (12, 12), (5, 5), 1, 0, 1),
            window(3, (9, 11), (3, 3), 1, 1, 1),
        ] {
            let n = w.cols().unwrap() as usize;
            let (whole, _) = product(&w, 6, (0, n));
            for cols in [(16, n), (3, n - 5), (0, 7), (n / 2, n / 2 + 1)] {
                let (part, _) = product(&w, 6, cols);
                for r in 0..6 {
                    let range = r * n + cols.0..r * n + cols.1;
                    assert_eq!(
                        part[range.clone()]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect::<Vec<_>>(),
                        whole[range].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{w:?}, columns {cols:?}, row {r}"
                    );
                }
                // Nothing outside the range is written.
                assert!(part[..cols.0].iter().all(|v| v.is_nan()));
            }
        }
    }
}
