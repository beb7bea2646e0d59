//! Zeroing without `memset`. bpf-linker expands `memcpy` in order but leaves `memset` to
//! a call of compiler_builtins' byte-at-a-time loop: a derived `Default` of the parsed
//! packet cost more than parsing it (`cargo xtask bench`). Word stores marked volatile
//! are never merged back into a `memset`; they go straight to the destination, since
//! LLVM turns a copy of freshly zeroed memory back into a `memset` too. Out of line,
//! like the call it replaces: inlined, the stores changed the caller's register
//! allocation enough for the verifier to reject it (an undefined register spilled).

use core::mem::{align_of, size_of, MaybeUninit};

/// Plain data, valid all-zero, zeroed with 4-byte stores.
///
/// # Safety
/// Every field is an integer or an array of integers (all-zero is a valid value), and
/// the type is at least 4-byte aligned, so its size is a whole number of words.
pub unsafe trait Zeroable: Sized {
    /// Writes zeros over every byte of `dst`: `assume_init` is sound afterwards.
    #[inline(never)]
    fn zero(dst: &mut MaybeUninit<Self>) {
        const { assert!(align_of::<Self>().is_multiple_of(4) && size_of::<Self>().is_multiple_of(4)) };
        if align_of::<Self>() >= 8 && size_of::<Self>().is_multiple_of(8) {
            // Half the stores (and the verifier's steps through the loop) for 8-byte
            // aligned types: the flow state is 384 bytes.
            let words = dst.as_mut_ptr().cast::<u64>();
            let mut i = 0;
            while i < size_of::<Self>() / 8 {
                // SAFETY: in bounds and aligned (size and alignment are multiples of 8).
                unsafe { core::ptr::write_volatile(words.add(i), 0) };
                i += 1;
            }
            return;
        }
        let words = dst.as_mut_ptr().cast::<u32>();
        let mut i = 0;
        while i < size_of::<Self>() / 4 {
            // SAFETY: in bounds and aligned (size and alignment are multiples of 4).
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
            i += 1;
        }
    }

    /// Zeros a value in place (e.g. a per-CPU map slot reused for every packet).
    #[inline(always)]
    fn clear(&mut self) {
        // SAFETY: MaybeUninit<Self> has Self's layout; zero() leaves a valid all-zero value.
        Self::zero(unsafe { &mut *(self as *mut Self).cast::<MaybeUninit<Self>>() });
    }
}
