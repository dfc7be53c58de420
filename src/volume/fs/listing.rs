//! A folder's entries as parsed once from its blocks, with a name index, so
//! that lookups in a cached folder cost one hash probe whatever the
//! folder's on-disk index looks like. Shared by the readers whose entries
//! are (name, inode) pairs: ext4 and XFS.

use std::collections::HashMap;

pub struct Listing<E> {
    pub entries: Vec<E>,
    by_name: HashMap<Vec<u8>, usize>,
}

impl<E> Listing<E> {
    /// Indexes `entries` by `name`; of two entries with one name (only a
    /// corrupt folder has them) the first wins, as a linear search would.
    pub fn new(entries: Vec<E>, name: impl Fn(&E) -> &[u8]) -> Self {
        let mut by_name = HashMap::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            by_name.entry(name(e).to_vec()).or_insert(k);
        }
        Listing { entries, by_name }
    }

    pub fn get(&self, name: &[u8]) -> Option<&E> {
        self.by_name.get(name).map(|&k| &self.entries[k])
    }
}
