//! Thread-local state reached without a call: [`thread_state!`].
//!
//! The allocator keeps per-thread state (the pool's heap slot, the learner's countdown) that its
//! fast paths read on every call. A const-initialised `thread_local!` without a destructor is
//! native TLS, but its *model* depends on where the code ends up:
//!
//! - In an executable (a Rust program's `#[global_allocator]`) it is local-exec: one
//!   `fs:`-relative address, no call.
//! - In a shared object (the preload library) it is general-dynamic: a call to
//!   `__tls_get_addr` on every access, on every `malloc` and `free`.
//!
//! Stable Rust has no TLS-model attribute (`-Z tls-model` is nightly). So in the preload build
//! on x86_64 Linux (cargo feature `preload`) the state is a TLS symbol defined in assembly and
//! read with the initial-exec model: `%fs:0` plus the symbol's offset in the static TLS block,
//! which the loader writes into the GOT (`R_X86_64_TPOFF64`). That is two loads, no call. A
//! library loaded at start-up (`LD_PRELOAD`, `DT_NEEDED`) has its TLS in the static block, which
//! is what initial-exec needs; the static linker marks the library `DF_STATIC_TLS`, so a loader
//! that could not place it there refuses to load it rather than run it wrong. Elsewhere the
//! macro is a plain `thread_local!`. docs/preload.md ("Thread-local state") has the measurement.
//!
//! The assembly symbol's initial bytes are its `.tdata` image, given to the macro as the value's
//! first two words (the rest is zero) or as all zero; unit tests check, in the ordinary build,
//! that the image is the initial value's bytes ([`is_image`]).

/// `thread_state! { [attrs] static NAME: Type = INIT, image [W0, W1], symbol "sym"; }` declares
/// `fn NAME<R>(f: impl FnOnce(&Type) -> R) -> R`, running `f` on this thread's `Type`, which
/// starts as `INIT` (a const expression). `INIT`'s bytes are `W0`, `W1` (as `usize`) then zeros:
/// the preload build's TLS image (module docs); `image zero` says they are all zero. `Type` has
/// no padding (the image is checked bytewise by [`is_image`]), no destructor, and an alignment
/// of at most 8; with `image [W0, W1]` it is at least 16 bytes. `sym` names the assembly
/// symbol; it is unique in the crate. (The symbols are global and hidden: two copies of hakmem
/// with `preload` linked into one object would clash at link time, never at run time.)
macro_rules! thread_state {
    (
        $(#[$attr:meta])*
        $vis:vis static $name:ident: $ty:ty = $init:expr, image zero, symbol $sym:literal;
    ) => {
        $crate::tls::thread_state! {
            @emit [$(#[$attr])*] $vis $name $ty, $init, $sym,
            [".zero {size}"], size = const core::mem::size_of::<$ty>()
        }
    };
    (
        $(#[$attr:meta])*
        $vis:vis static $name:ident: $ty:ty = $init:expr,
            image [$w0:expr, $w1:expr], symbol $sym:literal;
    ) => {
        $crate::tls::thread_state! {
            @emit [$(#[$attr])*] $vis $name $ty, $init, $sym,
            [".quad {w0}", ".quad {w1}", ".zero {rest}"],
            w0 = const $w0,
            w1 = const $w1,
            rest = const core::mem::size_of::<$ty>() - 16
        }
    };
    (
        @emit [$(#[$attr:meta])*] $vis:vis $name:ident $ty:ty, $init:expr, $sym:literal,
        [$($data:literal),*], $($operands:tt)*
    ) => {
        #[cfg(all(feature = "preload", target_arch = "x86_64", target_os = "linux"))]
        static_assertions::const_assert!(core::mem::align_of::<$ty>() <= 8);
        #[cfg(all(feature = "preload", target_arch = "x86_64", target_os = "linux"))]
        core::arch::global_asm!(
            concat!(".pushsection .tdata.", $sym, ",\"awT\",@progbits"),
            ".p2align 3",
            concat!(".globl ", $sym),
            concat!(".hidden ", $sym),
            concat!(".type ", $sym, ",@object"),
            concat!(".size ", $sym, ",", "{bytes}"),
            concat!($sym, ":"),
            $($data,)*
            ".popsection",
            bytes = const core::mem::size_of::<$ty>(),
            $($operands)*
        );

        $(#[$attr])*
        #[inline(always)]
        $vis fn $name<R>(f: impl FnOnce(&$ty) -> R) -> R {
            cfg_if::cfg_if! {
                if #[cfg(all(feature = "preload", target_arch = "x86_64", target_os = "linux"))] {
                    let p: *const $ty;
                    // SAFETY: `%fs:0` is the thread pointer (the TCB's self-pointer, x86_64
                    // ABI) and the GOT slot holds the symbol's offset from it; neither changes
                    // during the thread's life, so the result is a pure function of the thread
                    // (`pure`, `nomem`).
                    unsafe {
                        core::arch::asm!(
                            "mov {p}, qword ptr fs:[0]",
                            concat!("add {p}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                            p = out(reg) p,
                            options(pure, nomem, nostack),
                        );
                    }
                    debug_assert!(p.is_aligned());
                    // SAFETY: `p` is this thread's instance, initialised by the loader from the
                    // image (`INIT`'s bytes: the `is_image` tests), live for the thread's life,
                    // and only ever shared (the type mutates through `Cell`s).
                    f(unsafe { &*p })
                } else {
                    std::thread_local! {
                        static STATE: $ty = const { $init };
                    }
                    STATE.with(f)
                }
            }
        }
    };
}

pub(crate) use thread_state;

/// Whether `value`'s bytes are `image` (as `usize` words) then zeros: what the preload build's
/// TLS image of a [`thread_state!`] must be (checked by unit tests in the ordinary build).
#[cfg(test)]
pub(crate) fn is_image<T>(value: &T, image: Option<[usize; 2]>) -> bool {
    let size = core::mem::size_of::<T>();
    // SAFETY: `value` is `size` readable bytes, all initialised: the macro's types have no
    // padding (its contract).
    let bytes = unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size) };
    let (head, rest) = match image {
        Some(_) if size < 16 => return false,
        Some([w0, w1]) => {
            let (head, rest) = bytes.split_at(16);
            (head == [w0.to_ne_bytes(), w1.to_ne_bytes()].concat(), rest)
        }
        None => (true, bytes),
    };
    head && rest.iter().all(|&b| b == 0)
}
