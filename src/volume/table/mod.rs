//! Partition tables: GPT, MBR (with extended/logical partitions), or none.
