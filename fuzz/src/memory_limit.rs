//! Caps the process's address space, so an input that makes a reader
//! allocate gigabytes fails the run (allocation failure aborts) instead of
//! slowly eating the machine. difi with libtorch loaded runs in well under
//! this.

/// 4 GiB of address space.
pub const ADDRESS_SPACE_BYTES: u64 = 4 << 30;

/// Sets `RLIMIT_AS` to [`ADDRESS_SPACE_BYTES`] (or lower, if the hard limit is lower).
pub fn apply() -> std::io::Result<()> {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_AS, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let wanted = ADDRESS_SPACE_BYTES as libc::rlim_t;
        limit.rlim_cur = if limit.rlim_max == libc::RLIM_INFINITY { wanted } else { wanted.min(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
