//! The allocator's footprint. glibc only: other C libraries keep their defaults.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core) and keeps
//! freed pages for reuse, so a burst of large bodies would leave RSS high long after the
//! burst. lite-apiserver has two busy threads (the reactor and the cache writer), so two
//! arenas are enough, and the cache thread hands free pages back when it has been idle
//! for a while after writes.

/// Call once at start, before other threads exist.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the system (they would otherwise stay resident).
pub fn give_back_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory no one holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
