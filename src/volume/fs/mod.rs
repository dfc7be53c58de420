//! Filesystems detected by their magic: NTFS, ext2/3/4, FAT12/16/32.
