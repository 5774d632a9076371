//! The 16-byte header in front of every block that is not a pool block.
//!
//! ```text
//!  base                                    user (returned, aligned)
//!  |<------------- offset -------------->|
//!  | padding (alignment) | len | site | tag | user bytes …            |
//!                        |<-- Header, 16 -->|
//! ```
//!
//! `len` is the length of the underlying block (the `malloc` size or the mapping length), so the
//! usable capacity is `len - offset`; `site` is the allocating call site folded to 32 bits;
//! `tag` packs a magic value, the [`Method`] that owns the block and `log2(offset)`. The offset
//! is a power of two from 16 to the page size, so `base = user - offset` needs no `Layout`:
//! `free` works from the pointer alone, as the preload library requires.
//!
//! `dealloc` routes by the header, never by the current threshold (which moves while learning).
//! A freed header is re-tagged so that a second free of a block whose memory is still readable
//! and unchanged is reported as a double free; a wrong magic is reported as an invalid pointer.

use core::ptr::NonNull;

use static_assertions::const_assert_eq;

use crate::diag;

/// The header's size in bytes; also the smallest offset and the alignment of every user pointer.
pub(crate) const HEADER_SIZE: usize = 16;

const MAGIC: u32 = 0x4B48; // "HK"
const FREED: u8 = 0xDF;

/// Which backend owns a block, i.e. how it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Method {
    /// From the system allocator; released with `free(base)`.
    System = 1,
    /// A fresh mapping; released through the large-block free policy.
    Mmap = 2,
    /// A mapping handed out again by BigCache; released like `Mmap`.
    Cached = 3,
}

impl Method {
    const fn from_code(code: u8) -> Option<Method> {
        match code {
            1 => Some(Method::System),
            2 => Some(Method::Mmap),
            3 => Some(Method::Cached),
            _ => None,
        }
    }
}

#[repr(C)]
struct Header {
    len: usize,
    site: u32,
    tag: u32,
}

const_assert_eq!(core::mem::size_of::<Header>(), HEADER_SIZE);

const fn tag(method: u8, offset: usize) -> u32 {
    (MAGIC << 16) | ((method as u32) << 8) | offset.trailing_zeros()
}

/// Distance from the block's base to the user pointer for a request aligned to `align`:
/// at least the header; the alignment itself up to a page; one page beyond (the mapping is then
/// placed so that the user pointer, not the base, carries the alignment).
#[inline(always)]
pub(crate) const fn offset_for(align: usize, page: usize) -> usize {
    if align <= HEADER_SIZE {
        HEADER_SIZE
    } else if align <= page {
        align
    } else {
        page
    }
}

/// The whole tag of the commonest block: a system block with the plain 16-byte offset. One
/// 32-bit compare recognises it (magic, method and offset at once); everything else goes
/// through [`page_mapping`] and [`read`].
const PLAIN_SYSTEM: u32 = tag(Method::System as u8, HEADER_SIZE);

/// If `user` is a live plain system block (16-byte offset), returns its base (`user - 16`) and
/// its capacity. Any other pointer gives `None`.
///
/// # Safety
/// As [`decode`].
#[inline(always)]
pub(crate) unsafe fn plain_system(user: NonNull<u8>) -> Option<(NonNull<u8>, usize)> {
    if user.as_ptr() as usize % HEADER_SIZE != 0 {
        return None;
    }
    // SAFETY: aligned, and readable by the caller's guarantee.
    let header = unsafe { &*user.cast::<Header>().sub(1).as_ptr() };
    if header.tag != PLAIN_SYSTEM {
        return None;
    }
    // SAFETY: the tag says the block's base is 16 bytes before `user`.
    let base = unsafe { user.sub(HEADER_SIZE) };
    Some((base, header.len.wrapping_sub(HEADER_SIZE)))
}

/// The tag of a 4 KiB-offset mapping, fresh or cached: the two methods differ in bit 8 only.
const PAGE_MAPPING: u32 = tag(Method::Cached as u8, 4096);
static_assertions::const_assert_eq!(tag(Method::Mmap as u8, 4096) | 1 << 8, PAGE_MAPPING);

/// If `user` is a live mapping (fresh or from BigCache) with a one-page (4 KiB) offset, as
/// BigCache's class blocks are, returns its length and site. One compare; any other pointer
/// gives `None`. The length is not checked here: the free path checks it against the block's
/// class, or as a mapping's (whole pages, past the offset).
///
/// # Safety
/// As [`decode`], and `user` is 16-aligned.
#[inline(always)]
pub(crate) unsafe fn page_mapping(user: NonNull<u8>) -> Option<(usize, u32)> {
    debug_assert_eq!(user.as_ptr() as usize % HEADER_SIZE, 0);
    // SAFETY: aligned, and readable by the caller's guarantee.
    let header = unsafe { &*user.cast::<Header>().sub(1).as_ptr() };
    if header.tag | 1 << 8 == PAGE_MAPPING {
        Some((header.len, header.site))
    } else {
        None
    }
}

/// A decoded, validated header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    /// Start of the underlying block (`user - offset`).
    pub base: NonNull<u8>,
    /// Length of the underlying block.
    pub len: usize,
    /// Who owns it.
    pub method: Method,
    /// `user - base`.
    pub offset: usize,
    /// The allocating site, folded to 32 bits.
    pub site: u32,
}

impl Block {
    /// Bytes usable from `user` on.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.len - self.offset
    }
}

/// Writes the header of a block and returns the user pointer.
///
/// # Safety
/// `base` must be writable for `offset` bytes, `offset` must come from [`offset_for`] and `base +
/// offset` must be 16-aligned; `len >= offset`.
#[inline(always)]
pub(crate) unsafe fn write(
    base: NonNull<u8>,
    len: usize,
    offset: usize,
    method: Method,
    site: u32,
) -> NonNull<u8> {
    debug_assert!(offset.is_power_of_two() && offset >= HEADER_SIZE && len >= offset);
    // SAFETY: `base + offset` is inside the block (caller), so the header slot before it is too.
    unsafe {
        let user = base.add(offset);
        debug_assert_eq!(user.as_ptr() as usize % HEADER_SIZE, 0);
        user.cast::<Header>().sub(1).write(Header {
            len,
            site,
            tag: tag(method as u8, offset),
        });
        user
    }
}

/// Why a pointer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    DoubleFree,
    InvalidPointer,
    /// A valid magic, but a method or offset that cannot be (the tag).
    Corrupted(u32),
    /// A valid tag, but a length the block cannot have (the length).
    BadLength(usize),
}

/// Decodes the header of `user` without acting on a fault.
///
/// # Safety
/// The 16 bytes before `user` must be readable (true for every pointer hakmem returned and has
/// not released to the OS).
#[inline(always)]
pub(crate) unsafe fn decode(user: NonNull<u8>) -> Result<Block, Fault> {
    if user.as_ptr() as usize % HEADER_SIZE != 0 {
        return Err(Fault::InvalidPointer);
    }
    // SAFETY: aligned, and readable by the caller's guarantee.
    let h = unsafe { user.cast::<Header>().sub(1).read() };
    if h.tag >> 16 != MAGIC {
        return Err(Fault::InvalidPointer);
    }
    let code = (h.tag >> 8) as u8;
    let shift = h.tag & 0xFF;
    let method = match Method::from_code(code) {
        Some(m) => m,
        None if code == FREED => return Err(Fault::DoubleFree),
        None => return Err(Fault::Corrupted(h.tag)),
    };
    let offset = 1usize << (shift & 63);
    if !(4..=30).contains(&shift) || (user.as_ptr() as usize) < offset {
        return Err(Fault::Corrupted(h.tag));
    }
    let fits = match method {
        Method::System => h.len >= offset,
        Method::Mmap | Method::Cached => is_mapping(user, offset, h.len),
    };
    if !fits {
        return Err(Fault::BadLength(h.len));
    }
    Ok(Block {
        // SAFETY: `user - offset` is the block's base, inside the same allocation (checked above
        // that it does not wrap).
        base: unsafe { user.sub(offset) },
        len: h.len,
        method,
        offset,
        site: h.site,
    })
}

/// Whether a mapping `len` bytes long whose user pointer lies `offset` bytes in can be one of
/// ours: whole pages from a page boundary, the header inside them. (A zero-sized over-aligned
/// block is a mapping of exactly its header page.)
#[inline(always)]
pub(crate) fn is_mapping(user: NonNull<u8>, offset: usize, len: usize) -> bool {
    let base = (user.as_ptr() as usize).wrapping_sub(offset);
    len >= offset && (base | len) & (crate::os::page_size() - 1) == 0
}

/// Ends the process: the header of `user` has a length its block cannot have.
#[cold]
#[inline(never)]
pub(crate) fn bad_length(user: NonNull<u8>, op: &str, len: usize) -> ! {
    report(user, op, Fault::BadLength(len))
}

/// Decodes the header of `user`, ending the process with a clear message if it is not a live
/// hakmem block. `op` names the operation for the message ("free", "realloc").
///
/// # Safety
/// As [`decode`].
#[inline(always)]
pub(crate) unsafe fn read(user: NonNull<u8>, op: &str) -> Block {
    // SAFETY: forwarded from the caller.
    match unsafe { decode(user) } {
        Ok(block) => block,
        Err(fault) => report(user, op, fault),
    }
}

#[cold]
#[inline(never)]
fn report(user: NonNull<u8>, op: &str, fault: Fault) -> ! {
    match fault {
        Fault::DoubleFree => diag::fatal(format_args!("{op}({user:p}): double free detected")),
        Fault::InvalidPointer => diag::fatal(format_args!(
            "{op}({user:p}): invalid pointer (no hakmem header: not allocated by hakmem, \
             already released, or header overwritten)"
        )),
        Fault::Corrupted(tag) => diag::fatal(format_args!(
            "{op}({user:p}): corrupted header (tag {tag:#010x})"
        )),
        Fault::BadLength(len) => diag::fatal(format_args!(
            "{op}({user:p}): corrupted header (length {len:#x} does not fit the block)"
        )),
    }
}

/// Updates the recorded block length after the block was resized in place or moved.
///
/// # Safety
/// `block` was decoded from a live header, and `user` is where that block now lives.
#[inline(always)]
pub(crate) unsafe fn set_len(user: NonNull<u8>, len: usize) {
    // SAFETY: the header slot before a live block is ours.
    unsafe { (*user.cast::<Header>().sub(1).as_ptr()).len = len }
}

/// Re-tags the block at `user` (whose offset is `offset`) as freed, so that a second free is
/// recognised while its memory is unchanged.
///
/// # Safety
/// `user` is a live header block with that offset, being released now.
#[inline(always)]
pub(crate) unsafe fn mark_freed(user: NonNull<u8>, offset: usize) {
    // SAFETY: the header slot before a live block is ours until it is released.
    unsafe { (*user.cast::<Header>().sub(1).as_ptr()).tag = tag(FREED, offset) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 8192]);

    #[test]
    fn round_trip_and_faults() {
        let mut page = Page([0; 8192]);
        let base = NonNull::new(page.0.as_mut_ptr()).unwrap();
        // Every `decode` below reads 16 bytes inside `page`, 16-aligned or rejected first.
        let decode = |user: NonNull<u8>| {
            // SAFETY: all `user` pointers below lie at least 16 bytes into `page`.
            unsafe { decode(user) }
        };
        for offset in [16usize, 32, 64, 4096] {
            // SAFETY: the page buffer holds `offset` bytes and more.
            let user = unsafe { write(base, 8192, offset, Method::Mmap, 7) };
            let b = decode(user).unwrap();
            assert_eq!(
                (b.base, b.len, b.offset, b.method, b.site),
                (base, 8192, offset, Method::Mmap, 7)
            );
            assert_eq!(b.capacity(), 8192 - offset);
            // SAFETY: `b` was decoded from the header just written.
            unsafe { mark_freed(user, b.offset) };
            assert_eq!(decode(user).unwrap_err(), Fault::DoubleFree);
        }
        // SAFETY: inside the buffer.
        let (user, odd) = unsafe { (base.add(64), base.add(65)) };
        page.0[48..64].fill(0);
        assert_eq!(decode(user).unwrap_err(), Fault::InvalidPointer);
        assert_eq!(decode(odd).unwrap_err(), Fault::InvalidPointer);
        // A valid magic with an unknown method is corruption, not a foreign pointer.
        page.0[60..64].copy_from_slice(&((MAGIC << 16) | (9 << 8) | 4).to_ne_bytes());
        assert!(matches!(decode(user), Err(Fault::Corrupted(_))));
        // So is an offset that does not fit the block.
        page.0[60..64].copy_from_slice(&tag(Method::System as u8, 64).to_ne_bytes());
        page.0[48..56].copy_from_slice(&32usize.to_ne_bytes());
        assert_eq!(decode(user).unwrap_err(), Fault::BadLength(32));
        // A mapping is whole pages from a page boundary.
        page.0[60..64].copy_from_slice(&tag(Method::Mmap as u8, 64).to_ne_bytes());
        page.0[48..56].copy_from_slice(&8192usize.to_ne_bytes());
        assert_eq!(decode(user).unwrap().len, 8192, "base is the page's start");
        page.0[48..56].copy_from_slice(&8200usize.to_ne_bytes());
        assert_eq!(decode(user).unwrap_err(), Fault::BadLength(8200));
    }

    #[test]
    fn offsets() {
        assert_eq!(offset_for(1, 4096), 16);
        assert_eq!(offset_for(16, 4096), 16);
        assert_eq!(offset_for(64, 4096), 64);
        assert_eq!(offset_for(4096, 4096), 4096);
        assert_eq!(offset_for(1 << 30, 4096), 4096);
    }
}
