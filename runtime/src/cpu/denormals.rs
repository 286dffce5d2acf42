//! Flush-to-zero (FTZ) and denormals-are-zero (DAZ) on the threads that run kernels.
//!
//! A subnormal `f32` operand or result costs x86 cores a microcode assist, 100 cycles or
//! more per instruction instead of a few. Training produces them (a vanishing gradient, a
//! momentum decaying towards zero), and one kernel full of them runs tens of times slower.
//! So, as XLA and oneDNN do, kernels run with the SSE control register's FTZ (bit 15:
//! subnormal results become zero) and DAZ (bit 6: subnormal operands read as zero) set:
//!
//! - the calling thread while a [`Session`](crate::Session) runs an entry, through
//!   [`FlushDenormals`], which restores the caller's register when the entry returns, so
//!   the host program's own arithmetic is unchanged;
//! - the launch team's threads take the calling thread's mode with each launch
//!   (`mode`, `set_mode`), so a result never depends on which thread computed it,
//!   whether the caller flushes (a session) or not (a bare `launch`).
//!
//! Results therefore differ from IEEE arithmetic only where a value below `f32`'s smallest
//! normal (about 1.2e-38) is involved, which reads and is written as zero. The `gemm`
//! calls run on the same threads, under the same mode. On other architectures these are
//! no-ops (the CPU emitter targets x86-64).

/// FTZ | DAZ in MXCSR.
#[cfg(target_arch = "x86_64")]
const FLUSH_BITS: u32 = (1 << 15) | (1 << 6);

/// Sets FTZ and DAZ on this thread until dropped, then restores the previous mode.
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub fn enable() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr::read();
            mxcsr::write(saved | FLUSH_BITS);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        mxcsr::write(self.saved);
    }
}

/// This thread's FTZ and DAZ bits, for [`set_mode`] on another thread.
pub(crate) fn mode() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr::read() & FLUSH_BITS
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Gives this thread the FTZ and DAZ bits of [`mode`], keeping the rest of its register.
pub(crate) fn set_mode(bits: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        let now = mxcsr::read();
        if now & FLUSH_BITS != bits & FLUSH_BITS {
            mxcsr::write((now & !FLUSH_BITS) | (bits & FLUSH_BITS));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bits;
}

/// Whether this thread flushes denormals now (FTZ and DAZ both set).
pub fn flushing() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr::read() & FLUSH_BITS == FLUSH_BITS
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The SSE control and status register. Every x86-64 core has SSE2 and DAZ, so neither
/// needs a runtime check. (`std::arch`'s `_mm_getcsr`/`_mm_setcsr` are deprecated in
/// favour of inline assembly.)
#[cfg(target_arch = "x86_64")]
mod mxcsr {
    use std::arch::asm;

    pub fn read() -> u32 {
        let mut value: u32 = 0;
        // SAFETY: `stmxcsr` stores the 4-byte register at the given address, a local.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags));
        }
        value
    }

    pub fn write(value: u32) {
        // SAFETY: `ldmxcsr` loads the register from a local. The values written are the
        // register's own with FTZ and DAZ added, or a value read from it before, so no
        // reserved bit is set (which would fault).
        unsafe {
            asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, preserves_flags, readonly));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// The smallest normal `f32` halved: a subnormal.
    fn halved_min_positive() -> f32 {
        black_box(f32::MIN_POSITIVE) * black_box(0.5)
    }

    #[test]
    fn flushes_while_enabled_and_restores_the_previous_mode() {
        assert!(!flushing());
        assert!(halved_min_positive() > 0.0);
        {
            let _flush = FlushDenormals::enable();
            assert!(flushing());
            assert_eq!(halved_min_positive(), 0.0);
            // DAZ: a subnormal operand reads as zero.
            let subnormal = f32::from_bits(1);
            assert_eq!(black_box(subnormal) * black_box(2.0f32), 0.0);
        }
        assert!(!flushing());
        assert!(halved_min_positive() > 0.0);
    }
}
