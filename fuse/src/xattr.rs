//! Extended attributes over FUSE: who may see which, and the size-probe
//! protocol of `getxattr(2)`/`listxattr(2)`.

use fuser::{Errno, ReplyXattr};

/// `trusted.*` attributes are for root only, as on a kernel filesystem.
pub(crate) fn visible(name: &[u8], root: bool) -> bool {
    root || !name.starts_with(b"trusted.")
}

/// Largest answer to `getxattr`/`listxattr` (XATTR_SIZE_MAX and
/// XATTR_LIST_MAX are both 64 KiB).
const XATTR_MAX: usize = 64 << 10;

/// The size-probe protocol of `getxattr(2)`/`listxattr(2)`: size 0 asks for
/// the length; a buffer too small gets ERANGE; one too large for the kernel
/// gets E2BIG.
pub(crate) fn reply_sized(reply: ReplyXattr, data: &[u8], size: u32) {
    if data.len() > XATTR_MAX {
        reply.error(Errno::E2BIG);
    } else if size == 0 {
        // OK: at most 64 KiB.
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}
