//! Counter-based random numbers: Philox4x32-10.
//!
//! Strata draws every random number (parameter initialization now, dropout masks on CPU
//! and GPU later) from Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random
//! numbers: as easy as 1, 2, 3", SC'11), as distributed in Random123. A counter-based
//! generator is a pure function of `(counter, key)`: element `i` of a tensor gets its bits
//! from counter `i` with no state carried between elements, so any backend, any thread
//! split and any order of evaluation gives the same bits. This module is the reference
//! every backend's re-implementation is tested against.
//!
//! # Bit-level definition
//!
//! All arithmetic is on `u32` and wraps modulo 2^32.
//!
//! ```text
//! M0 = 0xD2511F53   M1 = 0xCD9E8D57       (round multipliers)
//! W0 = 0x9E3779B9   W1 = 0xBB67AE85       (Weyl key increments)
//!
//! philox4x32(c: [u32; 4], k: [u32; 2]):
//!     repeat 10 times (rounds r = 0..9):
//!         p0 = (M0 as u64) * (c[0] as u64)     # full 64-bit product
//!         p1 = (M1 as u64) * (c[2] as u64)
//!         hi0, lo0 = p0 >> 32, p0 & 0xffffffff
//!         hi1, lo1 = p1 >> 32, p1 & 0xffffffff
//!         c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
//!         k = [k[0] + W0, k[1] + W1]           # the bumped key is used by the next round
//!     return c
//! ```
//!
//! Round `r` thus uses key `k + r * W`. Backends without a 64-bit multiply (WGSL) compute
//! `hi` with a 16-bit-limb `mulhi` (or `umulExtended` where available); `lo` is the plain
//! wrapping `u32` product. In CLIF, `imul` + `umulhi` on `i32` give `lo` and `hi` directly.
//!
//! # From bits to numbers
//!
//! - [`uniform_f32`]: `(x >> 8) as f32 * 2^-24`, in `[0, 1)`. Exact in `f32` (24 bits fit
//!   the significand), so every backend gets the same float. Dropout uses this, through
//!   [`uniform_at`]: element `i` of a tensor drawn at training step `s` is word 0 of the
//!   block at counter `[i lo, i hi, s, 0]`.
//! - [`uniform_f64`]: `((hi as u64) << 21 | (lo >> 11) as u64) as f64 * 2^-53`, in
//!   `[0, 1)`, from two words (`hi` first). Exact in `f64`.
//! - [`standard_normal`]: Box-Muller on one whole block `b`:
//!   `u1 = 1 - uniform_f64(b[0], b[1])` (in `(0, 1]`, so `ln u1` is finite),
//!   `u2 = uniform_f64(b[2], b[3])`, result `sqrt(-2 ln u1) * cos(2 pi u2)`. The sine
//!   half is discarded so that one block always gives one normal and element `i` never
//!   depends on element `i ± 1`.
//!
//! # Streams
//!
//! [`Philox`] is a sequential convenience over the same function: its output is the
//! words of `philox4x32(counter, key)`, `philox4x32(counter + 1, key)`, … in order, word
//! 0 first, where `counter + 1` is a 128-bit increment with `counter[0]` the least
//! significant word.

/// First round multiplier (applied to counter word 0).
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Second round multiplier (applied to counter word 2).
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 between rounds (golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 between rounds (sqrt(3) - 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;
/// Number of rounds: the Random123 default, and the variant its known answers are for.
pub const PHILOX_ROUNDS: usize = 10;

/// The high and low 32 bits of the 64-bit product `a * b`.
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox round with the round's key.
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mul_hi_lo(PHILOX_M0, c[0]);
    let (hi1, lo1) = mul_hi_lo(PHILOX_M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32-10: 128 random bits from a 128-bit counter and a 64-bit key.
///
/// Bit-compatible with Random123's `philox4x32(ctr, key)` (10 rounds); see the module
/// docs for the exact definition.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..PHILOX_ROUNDS {
        if r > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        c = round(c, k);
    }
    c
}

/// A uniform float in `[0, 1)` from the top 24 bits of `bits`: `(bits >> 8) * 2^-24`.
pub fn uniform_f32(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform double in `[0, 1)` from 53 bits of two words: the 32 bits of `hi` above the
/// top 21 bits of `lo`, times 2^-53.
pub fn uniform_f64(hi: u32, lo: u32) -> f64 {
    let bits = (u64::from(hi) << 21) | u64::from(lo >> 11);
    bits as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// A standard normal draw from one Philox block (Box-Muller, cosine half; see the module
/// docs). Always finite: `|z| <= sqrt(-2 ln 2^-53) ≈ 8.57`.
pub fn standard_normal(block: [u32; 4]) -> f64 {
    let u1 = 1.0 - uniform_f64(block[0], block[1]);
    let u2 = uniform_f64(block[2], block[3]);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The 64-bit key words of a seed: low word first.
pub fn key_from_seed(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The key of each of the [`PHILOX_ROUNDS`] rounds: round `r` uses `key + r * W`.
/// Backends that know the key when they generate code (the seed is a constant of the op)
/// emit these as constants instead of bumping the key at run time.
pub fn round_keys(key: [u32; 2]) -> [[u32; 2]; PHILOX_ROUNDS] {
    let mut keys = [key; PHILOX_ROUNDS];
    for r in 1..PHILOX_ROUNDS {
        keys[r] = [
            keys[r - 1][0].wrapping_add(PHILOX_W0),
            keys[r - 1][1].wrapping_add(PHILOX_W1),
        ];
    }
    keys
}

/// The counter word of a training step held as a float (the graph's `step` scalar):
/// truncated towards zero and saturating, NaN and negatives -> 0. This is Rust's `as`,
/// Cranelift's `fcvt_to_uint_sat`, and what the WGSL emitter spells out.
pub fn step_word(step: f32) -> u32 {
    step as u32
}

/// Element `index` of the uniform tensor drawn at `step` under `seed` (the kernel IR's
/// `Expr::Uniform` and the graph's `random_uniform`): word 0 of the block at counter
/// `[index lo, index hi, step, 0]`, as [`uniform_f32`].
///
/// Every backend re-implements exactly this; the differential tests compare bits.
pub fn uniform_at(seed: u64, index: u64, step: u32) -> f32 {
    let counter = [index as u32, (index >> 32) as u32, step, 0];
    uniform_f32(philox4x32(counter, key_from_seed(seed))[0])
}

/// A sequential stream over Philox4x32-10: the words of the blocks at `counter`,
/// `counter + 1`, … (see the module docs). For reproducible parallel draws call
/// [`philox4x32`] with the element index in the counter instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Philox {
    /// The key, fixed for the stream's life.
    pub key: [u32; 2],
    /// The counter of the next block to generate (word 0 least significant).
    pub counter: [u32; 4],
    /// The current block and how many of its words have been handed out (4: none left).
    block: [u32; 4],
    used: usize,
}

impl Philox {
    /// A stream with `key` whose first block is at `counter`.
    pub fn new(key: [u32; 2], counter: [u32; 4]) -> Philox {
        Philox {
            key,
            counter,
            block: [0; 4],
            used: 4,
        }
    }

    /// A stream keyed by `seed` starting at counter zero.
    pub fn from_seed(seed: u64) -> Philox {
        Philox::new(key_from_seed(seed), [0; 4])
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.block = philox4x32(self.counter, self.key);
            self.counter = increment(self.counter);
            self.used = 0;
        }
        let word = self.block[self.used];
        self.used += 1;
        word
    }

    /// A uniform double in `[0, 1)` from the next two words ([`uniform_f64`], `hi` first).
    pub fn next_uniform(&mut self) -> f64 {
        let hi = self.next_u32();
        let lo = self.next_u32();
        uniform_f64(hi, lo)
    }

    /// A standard normal from the next four words ([`standard_normal`]).
    pub fn next_normal(&mut self) -> f64 {
        let block = [
            self.next_u32(),
            self.next_u32(),
            self.next_u32(),
            self.next_u32(),
        ];
        standard_normal(block)
    }
}

impl Iterator for Philox {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        Some(self.next_u32())
    }
}

/// `counter + 1` as a 128-bit integer, word 0 least significant, wrapping at 2^128.
fn increment(mut counter: [u32; 4]) -> [u32; 4] {
    for word in &mut counter {
        let (next, carry) = word.overflowing_add(1);
        *word = next;
        if !carry {
            break;
        }
    }
    counter
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from Random123's kat_vectors (philox4x32 with 10 rounds).
    #[test]
    fn matches_random123_zero_vector() {
        assert_eq!(
            philox4x32([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
    }

    #[test]
    fn matches_random123_all_ones_vector() {
        assert_eq!(
            philox4x32([0xffff_ffff; 4], [0xffff_ffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
    }

    #[test]
    fn matches_random123_pi_digits_vector() {
        assert_eq!(
            philox4x32(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_f32_uses_the_top_24_bits() {
        assert_eq!(uniform_f32(0), 0.0);
        assert_eq!(uniform_f32(0xff), 0.0);
        assert_eq!(uniform_f32(0x8000_0000), 0.5);
        assert_eq!(uniform_f32(0x0000_0100), 2f32.powi(-24));
        assert_eq!(uniform_f32(u32::MAX), 1.0 - 2f32.powi(-24));
        assert!(uniform_f32(u32::MAX) < 1.0);
    }

    #[test]
    fn uniform_f64_uses_53_bits_of_two_words() {
        assert_eq!(uniform_f64(0, 0), 0.0);
        assert_eq!(uniform_f64(0x8000_0000, 0), 0.5);
        assert_eq!(uniform_f64(0, 0x800), 2f64.powi(-53));
        assert_eq!(uniform_f64(0, 0x7ff), 0.0);
        assert_eq!(uniform_f64(u32::MAX, u32::MAX), 1.0 - 2f64.powi(-53));
    }

    #[test]
    fn standard_normal_is_finite_at_the_extremes() {
        // u1 = 1 - 0 = 1 gives radius 0; u1 = 2^-53 gives the largest radius.
        assert_eq!(standard_normal([0, 0, 0, 0]), 0.0);
        let z = standard_normal([u32::MAX, u32::MAX, 0, 0]);
        assert!(z.is_finite());
        assert!((z - (106.0 * std::f64::consts::LN_2).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn round_keys_bump_by_the_weyl_increments() {
        let keys = round_keys([u32::MAX, 1]);
        assert_eq!(keys[0], [u32::MAX, 1]);
        assert_eq!(
            keys[2],
            [
                u32::MAX.wrapping_add(PHILOX_W0.wrapping_mul(2)),
                1u32.wrapping_add(PHILOX_W1.wrapping_mul(2))
            ]
        );
        // Ten rounds with the precomputed keys give `philox4x32`.
        let mut c = [1, 2, 3, 4];
        for k in keys {
            c = round(c, k);
        }
        assert_eq!(c, philox4x32([1, 2, 3, 4], [u32::MAX, 1]));
    }

    #[test]
    fn step_word_truncates_and_saturates() {
        assert_eq!(step_word(3.0), 3);
        assert_eq!(step_word(3.9), 3);
        assert_eq!(step_word(-2.0), 0);
        assert_eq!(step_word(f32::NAN), 0);
        assert_eq!(step_word(1e20), u32::MAX);
    }

    #[test]
    fn uniform_at_puts_index_and_step_in_the_counter() {
        let index = (5u64 << 32) | 7;
        let bits = philox4x32([7, 5, 9, 0], key_from_seed(0x1234_5678_9abc))[0];
        assert_eq!(uniform_at(0x1234_5678_9abc, index, 9), uniform_f32(bits));
        assert_ne!(uniform_at(1, 0, 0), uniform_at(1, 0, 1));
        assert_ne!(uniform_at(1, 0, 0), uniform_at(2, 0, 0));
        assert_ne!(uniform_at(1, 0, 0), uniform_at(1, 1, 0));
    }

    #[test]
    fn stream_yields_consecutive_blocks_word_by_word() {
        let key = [7, 9];
        let words: Vec<u32> = Philox::new(key, [u32::MAX, 0, 0, 0]).take(8).collect();
        assert_eq!(words[..4], philox4x32([u32::MAX, 0, 0, 0], key));
        // The counter carries into word 1.
        assert_eq!(words[4..], philox4x32([0, 1, 0, 0], key));
    }

    #[test]
    fn counter_increment_wraps_at_2_pow_128() {
        assert_eq!(increment([u32::MAX; 4]), [0; 4]);
        assert_eq!(increment([u32::MAX, u32::MAX, 3, 0]), [0, 0, 4, 0]);
    }

    #[test]
    fn stream_from_seed_is_deterministic_and_seed_dependent() {
        let a: Vec<u32> = Philox::from_seed(42).take(16).collect();
        let b: Vec<u32> = Philox::from_seed(42).take(16).collect();
        let c: Vec<u32> = Philox::from_seed(43).take(16).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[..4], philox4x32([0; 4], [42, 0]));
    }

    #[test]
    fn stream_uniforms_have_the_right_moments() {
        let mut rng = Philox::from_seed(1);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.next_uniform()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn stream_normals_have_the_right_moments_and_shape() {
        let mut rng = Philox::from_seed(2);
        let n = 100_000;
        let zs: Vec<f64> = (0..n).map(|_| rng.next_normal()).collect();
        let mean = zs.iter().sum::<f64>() / n as f64;
        let var = zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64;
        let within_one = zs.iter().filter(|z| z.abs() < 1.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        assert!(
            (within_one - 0.6827).abs() < 0.01,
            "P(|z|<1) = {within_one}"
        );
    }
}
