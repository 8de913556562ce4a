//! The allocator of the `herald` binary: mimalloc, without transparent huge pages, returning
//! freed memory to the system at once. herald allocates and frees small objects on several
//! threads at high rates; mimalloc does that faster than glibc's malloc, and with these settings
//! its resident memory follows what herald actually holds. The benchmarks install the same
//! allocator ([`Allocator`]) with the same settings ([`configure`]).
//!
//! The only unsafe code in herald: two calls into mimalloc's C option API.
#![allow(unsafe_code)]

pub type Allocator = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (position in `mi_option_e`, `mimalloc.h` of the bundled
/// mimalloc 3): how long freed memory is kept before it is returned to the system, in
/// milliseconds (1000 by default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets `purge_delay` to 0, unless the environment chose a value (`MIMALLOC_PURGE_DELAY`).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's option setter takes plain integers and may be called at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_set_to_zero() {
        // SAFETY: see `configure`.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default,
            1000,
            "option {} is not purge_delay",
            super::MI_OPTION_PURGE_DELAY
        );
        super::configure();
        // SAFETY: see `configure`.
        let now = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(now, 0);
    }
}
