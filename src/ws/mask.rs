//! CONTRACT STUB: implemented on the ws branch.

/// XORs `buf` with the 4-byte `mask`, as if `buf` started at byte `offset` of the payload.
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let _ = (buf, mask, offset);
    todo!()
}
