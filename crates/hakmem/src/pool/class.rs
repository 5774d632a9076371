//! The pool's size classes and span kinds.
//!
//! 56 classes from 16 B to 512 KiB: multiples of 16 up to 128 B, then four classes per doubling
//! (`2^b + k·2^(b-2)`, k = 1..4), so a block wastes at most 25% of its size (at most 15 bytes up
//! to 128 B). Every class size is a multiple of 16, so every block is 16-aligned; the powers of
//! two among them serve larger alignments.
//!
//! A class lives in spans of one kind: 64 KiB spans up to 8 KiB, 512 KiB spans up to 64 KiB,
//! 4 MiB spans up to 512 KiB, so a span holds at least 8 blocks.

/// Number of size classes.
pub(crate) const CLASSES: usize = 56;
/// The largest size the pool serves.
pub(crate) const MAX_SIZE: usize = 512 << 10;
/// The alignment of every block.
pub(crate) const MIN_ALIGN: usize = 16;
/// Sizes up to this are classed by a table lookup; larger ones by arithmetic.
const TABLE_MAX: usize = 1024;

/// Number of span kinds.
pub(crate) const KINDS: usize = 3;
/// log2 of each kind's span length.
const SPAN_SHIFT: [u32; KINDS] = [16, 19, 22];
/// The first class of each kind after the first (classes below `KIND_START[0]` are kind 0).
const KIND_START: [usize; KINDS - 1] = [32, 44];

/// The block size of class `c`.
const fn size_of_class(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let b = 7 + (c - 8) / 4;
        let k = (c - 8) % 4 + 1;
        (1 << b) + k * (1 << (b - 2))
    }
}

/// The class of a size above 128 bytes (and at most [`MAX_SIZE`]).
#[inline(always)]
const fn class_above_128(size: usize) -> usize {
    let s = size - 1;
    let b = (usize::BITS - 1 - s.leading_zeros()) as usize;
    8 + (b - 7) * 4 + ((s >> (b - 2)) & 3)
}

/// The block size of every class.
pub(crate) static SIZES: [u32; CLASSES] = {
    let mut t = [0u32; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        t[c] = size_of_class(c) as u32;
        c += 1;
    }
    t
};

/// Blocks per span of every class.
pub(crate) static CAPACITY: [u16; CLASSES] = {
    let mut t = [0u16; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        let n = span_len(kind(c)) / size_of_class(c);
        // A span's counts are `u16`s: checked at compile time (most: 4,096 blocks of 16 bytes).
        assert!(n <= MAX_CAPACITY);
        t[c] = n as u16;
        c += 1;
    }
    t
};

/// The most blocks a span holds (with one more count for the current span, `Span::used` still
/// fits a `u16`).
pub(crate) const MAX_CAPACITY: usize = u16::MAX as usize - 1;

/// `floor(2^48 / size) + 1` for every class: `(off · MAGIC) >> 48` is `off / size` exactly for
/// every offset in a span (`off < 2^22`): with `MAGIC · size = 2^48 + e`, `0 < e ≤ size ≤ 2^19`,
/// the error `off · e / 2^48` stays below `2^41 / 2^48`, too little to reach the next multiple.
static MAGIC: [u64; CLASSES] = {
    let mut t = [0u64; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        t[c] = (1u64 << 48) / size_of_class(c) as u64 + 1;
        c += 1;
    }
    t
};

/// The index of the block of `class` at byte `off` of its span, if `off` is a block boundary
/// inside the span's capacity. No division: a multiplication by [`MAGIC`].
#[inline]
pub(crate) fn block_index(class: usize, off: usize) -> Option<u32> {
    if class >= CLASSES || off >= span_len(KINDS - 1) {
        return None;
    }
    let q = ((off as u128 * MAGIC[class] as u128) >> 48) as usize;
    (q * SIZES[class] as usize == off && q < CAPACITY[class] as usize).then_some(q as u32)
}

/// `TABLE[(size + 15) / 16]`: the class of a size up to [`TABLE_MAX`].
static TABLE: [u8; TABLE_MAX / 16 + 1] = {
    let mut t = [0u8; TABLE_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = if i <= 8 {
            if i == 0 {
                0
            } else {
                (i - 1) as u8
            }
        } else {
            class_above_128(i * 16) as u8
        };
        i += 1;
    }
    t
};

/// The class of a request of `size` bytes (`size <= MAX_SIZE`).
#[inline(always)]
pub(crate) fn of(size: usize) -> usize {
    debug_assert!(size <= MAX_SIZE);
    if size <= TABLE_MAX {
        let i = (size + 15) >> 4;
        debug_assert!(i < TABLE.len());
        // SAFETY: `size <= TABLE_MAX`, so `i <= TABLE_MAX / 16`, in bounds.
        unsafe { *TABLE.get_unchecked(i) as usize }
    } else {
        class_above_128(size)
    }
}

/// The smallest class that holds `size` bytes at alignment `align` (a power of two above 16):
/// its size is a multiple of `align`, and every span starts on a 64 KiB boundary, so each of its
/// blocks is aligned. `None` if no class fits.
pub(crate) fn of_aligned(size: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    let size = size.max(align);
    if size > MAX_SIZE || align > 1 << SPAN_SHIFT[0] {
        return None;
    }
    (of(size)..CLASSES).find(|&c| SIZES[c] as usize % align == 0)
}

/// `i` as an index into a table of `n` entries, where the pool's invariants keep it below `n` (a
/// class below [`CLASSES`], a span kind below [`KINDS`], read back from a span's descriptor or
/// passed down from [`of`]): unchanged then, else clamped to `n - 1`. The compiler then drops the
/// bounds check, whose panic path the preload library's exports must not reach
/// (docs/preload.md); it costs a compare and a conditional move, on the pool's slow paths only
/// (the fast paths index without a check: `Heap::pop`).
#[inline(always)]
pub(crate) const fn bounded(i: usize, n: usize) -> usize {
    debug_assert!(i < n);
    if i < n {
        i
    } else {
        n - 1
    }
}

/// The span kind of class `c`.
#[inline(always)]
pub(crate) const fn kind(c: usize) -> usize {
    if c < KIND_START[0] {
        0
    } else if c < KIND_START[1] {
        1
    } else {
        2
    }
}

/// The classes whose spans are of `kind`, as a range of class indices.
#[inline]
pub(crate) const fn classes_of(kind: usize) -> core::ops::Range<usize> {
    match kind {
        0 => 0..KIND_START[0],
        1 => KIND_START[0]..KIND_START[1],
        _ => KIND_START[1]..CLASSES,
    }
}

/// The length of a span of `kind`.
#[inline(always)]
pub(crate) const fn span_len(kind: usize) -> usize {
    1 << SPAN_SHIFT[bounded(kind, KINDS)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_tightly() {
        assert_eq!(SIZES[0], 16);
        assert_eq!(SIZES[CLASSES - 1] as usize, MAX_SIZE);
        for w in SIZES.windows(2) {
            assert!(w[0] < w[1] && w[1] % 16 == 0);
        }
        let mut size = 0;
        while size <= MAX_SIZE {
            let c = of(size);
            let fits = SIZES[c] as usize;
            assert!(fits >= size, "size {size} in class {c} of {fits}");
            assert!(
                c == 0 || (SIZES[c - 1] as usize) < size,
                "size {size}: class {c} not the smallest"
            );
            size += if size < 4096 { 1 } else { 61 };
        }
        assert_eq!(of(MAX_SIZE), CLASSES - 1);
    }

    #[test]
    fn classes_of_inverts_kind() {
        for k in 0..KINDS {
            assert!(!classes_of(k).is_empty());
            for c in classes_of(k) {
                assert_eq!(kind(c), k, "class {c}");
            }
        }
        let total: usize = (0..KINDS).map(|k| classes_of(k).len()).sum();
        assert_eq!(total, CLASSES);
    }

    #[test]
    fn kinds_hold_at_least_eight_blocks() {
        for (c, &size) in SIZES.iter().enumerate() {
            let blocks = span_len(kind(c)) / size as usize;
            assert!(blocks >= 8, "class {c}: {blocks} blocks");
            if c > 0 && kind(c) > kind(c - 1) {
                // The previous kind would have held fewer than 8 of this class.
                assert!(span_len(kind(c - 1)) / (size as usize) < 8);
            }
        }
        assert_eq!((kind(0), kind(31), kind(32), kind(44)), (0, 0, 1, 2));
        assert_eq!(SIZES[31], 8192);
    }

    #[test]
    fn block_index_divides_exactly() {
        for c in 0..CLASSES {
            let size = SIZES[c] as usize;
            let cap = CAPACITY[c] as usize;
            assert_eq!(cap, span_len(kind(c)) / size);
            for q in 0..cap {
                let off = q * size;
                assert_eq!(block_index(c, off), Some(q as u32), "class {c} block {q}");
                for d in [1, 8, 15, size / 2, size - 1] {
                    assert_eq!(block_index(c, off + d), None, "class {c} off {}", off + d);
                }
            }
            // The tail after the last block, and beyond the span.
            assert_eq!(block_index(c, cap * size), None);
            assert_eq!(block_index(c, span_len(KINDS - 1)), None);
        }
        assert_eq!(block_index(CLASSES, 0), None);
    }

    #[test]
    fn aligned_classes() {
        assert_eq!(of_aligned(1, 32).map(|c| SIZES[c]), Some(32));
        assert_eq!(of_aligned(100, 64).map(|c| SIZES[c]), Some(128));
        assert_eq!(of_aligned(130, 32).map(|c| SIZES[c]), Some(160));
        assert_eq!(of_aligned(5000, 4096).map(|c| SIZES[c]), Some(8192));
        assert_eq!(of_aligned(MAX_SIZE + 1, 32), None);
        for align in [32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1, align - 1, align, align + 1, 3 * align, 10_000] {
                let c = of_aligned(size, align).unwrap();
                assert!(SIZES[c] as usize >= size && SIZES[c] as usize % align == 0);
            }
        }
    }
}
