//! JSON encoding into a byte vector, with short writes copied inline.
//!
//! Why: compiled to Wasm, a copy whose length is not known at compile time
//! becomes a `memory.copy` instruction, and wasmtime (so Spin too) runs every
//! `memory.copy` as a call out to the host. serde_json writes each key, string
//! piece and number as such a copy, so encoding one packet record made dozens
//! of these calls (they were ~6% of an open's CPU in the bench's profile).
//! Most writes are a few bytes: those are copied here with two overlapping
//! word moves, a shape the compiler cannot turn back into `memory.copy`.

use serde::Serialize;
use std::io;

/// `serde_json::to_vec`, for values whose serialisation cannot fail (every
/// record and view here: no maps with non-string keys, no custom errors).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = ShortWrites(Vec::with_capacity(256));
    serde_json::to_writer(&mut out, value).expect("records and views serialise");
    out.0
}

struct ShortWrites(Vec<u8>);

impl io::Write for ShortWrites {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ShortWrites {
    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if n > 16 {
            self.0.extend_from_slice(bytes);
            return;
        }
        self.0.reserve(n);
        let len = self.0.len();
        // SAFETY: `reserve` made room for `n` more bytes after `len`;
        // `copy_short` writes exactly the bytes `len..len + n` from `bytes`.
        unsafe {
            copy_short(bytes.as_ptr(), self.0.as_mut_ptr().add(len), n);
            self.0.set_len(len + n);
        }
    }
}

/// Copies `n` ≤ 16 bytes from `src` to `dst` without a loop: two overlapping
/// moves of the widest word that fits (the same bytes may be written twice).
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes, `n` ≤ 16.
#[inline(always)]
unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    debug_assert!(n <= 16);
    // SAFETY (every access): offsets stay within `0..n` (for n ≥ 8: 0..8 and
    // n-8..n; for 4 ≤ n < 8: 0..4 and n-4..n; else single bytes below n).
    unsafe {
        if n >= 8 {
            let head = src.cast::<u64>().read_unaligned();
            let tail = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let head = src.cast::<u32>().read_unaligned();
            let tail = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n > 0 {
            // 1 to 3 bytes: first, middle and last cover them all.
            let (first, middle, last) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = first;
            *dst.add(n / 2) = middle;
            *dst.add(n - 1) = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_short_length_is_copied_exactly_after_any_prefix() {
        let source: Vec<u8> = (1..=40).collect();
        for prefix in 0..20 {
            for n in 0..=source.len() {
                let mut w = ShortWrites(Vec::new());
                w.write_all(&vec![0xEE; prefix]).unwrap();
                w.write_all(&source[..n]).unwrap();
                let mut expected = vec![0xEE; prefix];
                expected.extend_from_slice(&source[..n]);
                assert_eq!(w.0, expected, "prefix {prefix}, length {n}");
            }
        }
    }

    #[test]
    fn output_is_serde_jsons_own() {
        let value = serde_json::json!({
            "id": "0001a2b3c4d5e6f7", "greeting": "恭喜发财，大吉大利 \"quoted\" \\ \n",
            "amounts": [1, 22, 333, 4_444_444_444_u64, 18_446_744_073_709_551_615_u64, -7, 0.5],
            "nested": { "empty": "", "none": null, "yes": true, "list": [] },
        });
        assert_eq!(to_vec(&value), serde_json::to_vec(&value).unwrap());
    }
}
