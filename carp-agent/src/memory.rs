//! What the agent gives back to the kernel after its peaks, so that it stays resident at
//! what it uses (the scale benchmark's RSS target) rather than at what startup touched.

/// How often the running agent trims its heap (see [`trim_heap`]), for the temporaries of
/// everything it does: starting hundreds of VHIDs, reloads, netlink.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Trims the heap after an answer of `bytes` (status, metrics) once it is freed, when it
/// was large: the status of 255 VHIDs is about 100 KiB of JSON, whose pages glibc keeps
/// (280 KiB measured in the scale benchmark), while small answers leave nothing to trim.
pub fn after_answer(bytes: usize) {
    if bytes >= 16 * 1024 {
        trim_heap();
    }
}

/// Returns the heap's free pages to the kernel: glibc keeps them after a peak (loading the
/// program parses the kernel's BTF, about 15 MB; starting hundreds of VHIDs leaves
/// netlink and formatting temporaries), and the agent would stay resident at it for life.
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Lets the kernel take back the pages of `bytes`, a part of the binary read once (the
/// embedded XDP object, half a MiB, which the parsed object holds copies of). Whole pages
/// only; a later read faults them in again from the file.
pub fn release(bytes: &'static [u8]) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize);
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: whole pages of the binary's read-only file mapping; MADV_DONTNEED drops
        // them from this process only, and their next read maps them from the file again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}
