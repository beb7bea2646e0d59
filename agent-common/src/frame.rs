//! Bounds-checked reads from a packet, implemented by the kernel (XDP/TC context
//! pointers) and by userspace (a byte slice).

/// A packet whose bytes can be read at an offset. Every read is checked against
/// the end of the packet: `None` past the end.
pub trait Frame {
    /// Reads `N` bytes at `offset`.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    #[inline(always)]
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.bytes::<1>(offset).map(|b| b[0])
    }

    #[inline(always)]
    fn be16(&self, offset: usize) -> Option<u16> {
        self.bytes::<2>(offset).map(u16::from_be_bytes)
    }

    #[inline(always)]
    fn be32(&self, offset: usize) -> Option<u32> {
        self.bytes::<4>(offset).map(u32::from_be_bytes)
    }
}

/// A frame held in memory (offline analysis, unit tests).
pub struct SliceFrame<'a>(pub &'a [u8]);

impl Frame for SliceFrame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let src = self.0.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(src);
        Some(out)
    }
}
