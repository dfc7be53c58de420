//! The reader half that every copy of a disk shares (backup, export): walk
//! the source by allocation state ([`ReadAt::status`]), skip what is known
//! to read as zeros without touching it, read the rest in bounded chunks on
//! worker threads, and hand the results over in order.
//!
//! Why threads: reading (a `pread` or page faults) and the per-chunk work
//! (hashing 4 MiB costs about as much as reading it from the page cache)
//! overlap on every core, while the consumer, which writes an image, stays
//! single-threaded and sees the disk in order. Memory stays bounded: each
//! worker holds at most a few chunks in flight.

use super::{Alloc, Extent, ReadAt, Run};
use std::io;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

/// Chunks queued per worker, in each direction.
const QUEUED: usize = 2;
/// Most bytes one status question covers, in chunks: a long data run is
/// not resolved to its end (a whole dense chain's metadata) before its
/// first chunk is read, and a long hole still costs few steps.
const STATUS_CHUNKS: u64 = 64;

/// How to walk a source.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most bytes read as one chunk (a multiple of `grain`).
    pub chunk: u64,
    /// Zero and unallocated runs are skipped only in whole grains (the
    /// cluster size of the image written), so chunks stay aligned to it;
    /// the partial grains at their edges are read as data.
    pub grain: u64,
    /// Threads reading and working on chunks.
    pub workers: usize,
    /// Lend chunks from the source's memory map where it has one (see
    /// `extent.rs`) instead of copying them into a buffer.
    pub map: bool,
    /// Zero and unallocated runs shorter than this between data in one
    /// chunk are not steps of their own: the chunk's data is read around
    /// them and they are zeros in its buffer. A sparse disk with data in
    /// every other cluster is then a few hundred chunk hand-offs per GiB
    /// instead of tens of thousands of tiny steps (each a thread wake-up,
    /// a status answer and a write). 0: every skippable run is a step (as
    /// lending from a map needs: a map may not cover holes).
    pub gap: u64,
}

/// A `gap` for walks that read into buffers: filling and checking a hole
/// of this size costs about as much as handing one step between threads.
pub const GAP: u64 = 256 << 10;

/// A read (or status) failure, with where it happened.
#[derive(Debug, thiserror::Error)]
#[error("reading the source at offset {offset}: {source}")]
pub struct ReadError {
    pub offset: u64,
    #[source]
    pub source: io::Error,
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}

/// One step of a walk: a skippable run, or a data run (at most one chunk)
/// with the short skippable runs inside it (`holes`, whole grains, sorted)
/// that are not read but filled with zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub run: Run,
    pub holes: Vec<Range<u64>>,
}

/// The walk's steps: skippable runs (`Zero`/`Unallocated`, whole grains or
/// up to the end) and data runs (at most one chunk), in order, covering the
/// ranges given and nothing else.
pub struct Planner<'a> {
    reader: &'a dyn ReadAt,
    ranges: std::vec::IntoIter<Range<u64>>,
    pos: u64,
    end: u64,
    chunk: u64,
    grain: u64,
    gap: u64,
    /// The last status answer, reused while `pos` lies in it: one status
    /// call per run, not per chunk.
    last: Option<Run>,
}

impl<'a> Planner<'a> {
    /// Walks `ranges` (sorted, disjoint, inside the source) of `reader`.
    /// `gap`: see [`Options::gap`].
    pub fn new(reader: &'a dyn ReadAt, ranges: Vec<Range<u64>>, chunk: u64, grain: u64, gap: u64) -> Self {
        let grain = grain.max(1);
        let chunk = chunk.max(grain) / grain * grain;
        Planner { reader, ranges: ranges.into_iter(), pos: 0, end: 0, chunk, grain, gap, last: None }
    }

    fn status(&mut self, at: u64) -> io::Result<Run> {
        if let Some(r) = self.last.filter(|r| r.offset <= at && at < r.end()) {
            return Ok(Run { offset: at, len: r.end() - at, alloc: r.alloc });
        }
        let r = self.reader.status(at, (self.end - at).min(self.chunk.saturating_mul(STATUS_CHUNKS)))?;
        self.last = Some(r);
        Ok(r)
    }

    /// The next step from `self.pos` (which is below `self.end`).
    fn step(&mut self) -> io::Result<Step> {
        let (pos, end, g) = (self.pos, self.end, self.grain);
        let limit = pos.saturating_add(self.chunk).min(end);
        let data = |to: u64, holes| Step { run: Run { offset: pos, len: to - pos, alloc: Alloc::Data }, holes };
        let mut holes = Vec::new();
        let mut at = pos;
        while at < limit {
            let r = self.status(at)?;
            if r.alloc == Alloc::Data {
                at = r.end();
                continue;
            }
            // The whole grains of the hole (up to the end of the range,
            // which may end mid-grain).
            let from = r.offset.next_multiple_of(g);
            let to = if r.end() >= end { end } else { r.end() / g * g };
            if from >= to {
                at = r.end();
                continue;
            }
            // A short hole with more of the chunk after it goes inside the
            // data step.
            if to - from < self.gap && to < limit {
                holes.push(from..to);
                at = to;
                continue;
            }
            if from == pos {
                return Ok(Step { run: Run { offset: pos, len: to - pos, alloc: r.alloc }, holes });
            }
            return Ok(data(from.min(limit), holes));
        }
        Ok(data(limit, holes))
    }
}

impl Iterator for Planner<'_> {
    type Item = Result<Step, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos >= self.end {
            let r = self.ranges.next()?;
            (self.pos, self.end) = (r.start, r.end);
        }
        match self.step() {
            Ok(step) => {
                self.pos = step.run.end();
                Some(Ok(step))
            }
            Err(source) => {
                let offset = self.pos;
                // Stop after an error.
                self.pos = self.end;
                self.ranges = Vec::new().into_iter();
                Some(Err(ReadError { offset, source }))
            }
        }
    }
}

/// The one range that covers a source of `size` bytes.
pub fn whole(size: u64) -> Vec<Range<u64>> {
    std::iter::once(0..size).collect()
}

/// A data chunk's bytes: read into a buffer, or lent from a memory map.
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped(Extent),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(b) => b,
            Bytes::Mapped(e) => e.bytes(),
        }
    }

    /// Whether the bytes are the source's own pages, which may change
    /// while they are looked at (a copy taken of them is stable).
    pub fn is_mapped(&self) -> bool {
        matches!(self, Bytes::Mapped(_))
    }
}

/// One step as the consumer sees it.
pub enum Piece<T> {
    /// Known to read as zeros (`run.alloc` says how); nothing was read.
    Skip(Run),
    /// Bytes that may hold data, and what the workers made of them.
    /// `read`: how many of them were read from the source (short holes
    /// inside the run are zeros that were not).
    Data { run: Run, bytes: Bytes, done: T, read: u64 },
}

/// Walks `ranges` of `reader` and calls `consume` with every step, in
/// order. `work` runs on the worker threads for every data chunk (hashing,
/// or writing by position) and its result travels with the chunk.
pub fn walk<T, E>(
    reader: &dyn ReadAt,
    ranges: Vec<Range<u64>>,
    opts: Options,
    work: impl Fn(&Run, &[u8]) -> Result<T, E> + Sync,
    mut consume: impl FnMut(&Piece<T>) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    E: Send + From<ReadError>,
{
    let workers = opts.workers.max(1);
    std::thread::scope(|s| {
        let mut plans: Vec<SyncSender<Result<Step, ReadError>>> = Vec::new();
        let mut outs: Vec<Receiver<Result<Piece<T>, E>>> = Vec::new();
        let mut backs = Vec::new();
        for _ in 0..workers {
            let (plan_tx, plan_rx) = sync_channel(QUEUED);
            let (out_tx, out_rx) = sync_channel(QUEUED);
            let (back_tx, back_rx) = channel::<Vec<u8>>();
            plans.push(plan_tx);
            outs.push(out_rx);
            backs.push(back_tx);
            let work = &work;
            s.spawn(move || {
                for plan in plan_rx {
                    let piece = plan.map_err(E::from).and_then(|step| match step.run.alloc {
                        Alloc::Data => read(reader, &step, opts.map, &back_rx).and_then(|bytes| {
                            let done = work(&step.run, bytes.as_slice())?;
                            let holes: u64 = step.holes.iter().map(|h| h.end - h.start).sum();
                            Ok(Piece::Data { run: step.run, bytes, done, read: step.run.len - holes })
                        }),
                        _ => Ok(Piece::Skip(step.run)),
                    });
                    let failed = piece.is_err();
                    if out_tx.send(piece).is_err() || failed {
                        return;
                    }
                }
            });
        }
        s.spawn(move || {
            let gap = if opts.map { 0 } else { opts.gap };
            let planner = Planner::new(reader, ranges, opts.chunk, opts.grain, gap);
            for (i, plan) in planner.enumerate() {
                if plans[i % workers].send(plan).is_err() {
                    return;
                }
            }
        });
        // Worker i % workers has step i; when its channel closes without
        // it, the planner has run out of steps.
        for i in 0.. {
            let Ok(piece) = outs[i % workers].recv() else { break };
            let piece = piece?;
            consume(&piece)?;
            if let Piece::Data { bytes: Bytes::Owned(buf), .. } = piece {
                let _ = backs[i % workers].send(buf);
            }
        }
        Ok(())
    })
}

/// A data chunk's bytes: lent from the map when asked and possible, else
/// read into a recycled buffer around its holes, which are zero-filled.
fn read<E: From<ReadError>>(
    reader: &dyn ReadAt,
    step: &Step,
    map: bool,
    spare: &Receiver<Vec<u8>>,
) -> Result<Bytes, E> {
    let run = step.run;
    if map
        && step.holes.is_empty()
        && let Some(e) = reader.locate(run.offset, run.len).filter(|e| e.len() == run.len && e.is_backed())
    {
        return Ok(Bytes::Mapped(e));
    }
    let n = usize::try_from(run.len).map_err(|_| ReadError {
        offset: run.offset,
        source: io::Error::new(io::ErrorKind::InvalidInput, "chunk larger than memory"),
    })?;
    let mut buf = spare.try_recv().unwrap_or_default();
    buf.resize(n, 0);
    // Holes lie inside the run (the planner's invariant), so these
    // offsets stay within the buffer.
    let rel = |o: u64| (o - run.offset) as usize;
    let mut at = run.offset;
    for hole in step.holes.iter().chain(std::iter::once(&(run.end()..run.end()))) {
        if hole.start > at {
            let part = &mut buf[rel(at)..rel(hole.start)];
            reader.read_exact_at(at, part).map_err(|source| ReadError { offset: at, source })?;
        }
        buf[rel(hole.start)..rel(hole.end)].fill(0);
        at = hole.end;
    }
    Ok(Bytes::Owned(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source with a scripted allocation map (runs of `(len, alloc)`).
    struct Scripted {
        runs: Vec<(u64, Alloc)>,
        size: u64,
        /// Reads that reach past this fail.
        bad: u64,
    }

    impl ReadAt for Scripted {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            super::super::check_range(offset, buf.len(), self.size)?;
            if offset + buf.len() as u64 > self.bad {
                return Err(io::Error::other("bad sector"));
            }
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = ((offset + i as u64) % 251) as u8);
            Ok(())
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
            let mut at = 0;
            for &(n, alloc) in &self.runs {
                if offset < at + n {
                    return super::super::whole_run(offset, len.min(at + n - offset), self.size, alloc);
                }
                at += n;
            }
            super::super::whole_run(offset, len, self.size, Alloc::Data)
        }
    }

    #[test]
    fn holes_are_skipped_in_whole_grains_and_data_read_in_chunks() {
        let src = Scripted {
            runs: vec![(100, Alloc::Data), (1000, Alloc::Unallocated), (50, Alloc::Zero), (3000, Alloc::Data)],
            size: 4500,
            bad: u64::MAX,
        };
        let plans: Vec<Run> = Planner::new(&src, whole(4500), 1024, 256, 0).map(|s| s.unwrap().run).collect();
        let got: Vec<(u64, u64, Alloc)> = plans.iter().map(|r| (r.offset, r.len, r.alloc)).collect();
        assert_eq!(
            got,
            vec![
                (0, 256, Alloc::Data),
                (256, 768, Alloc::Unallocated),
                (1024, 1024, Alloc::Data),
                (2048, 1024, Alloc::Data),
                (3072, 1024, Alloc::Data),
                (4096, 404, Alloc::Data),
            ]
        );
        // A hole up to the end is skipped to the end, mid-grain; one that
        // starts mid-grain there is read with the data before it.
        let src = Scripted { runs: vec![(256, Alloc::Data), (244, Alloc::Zero)], size: 500, bad: u64::MAX };
        let plans: Vec<Run> = Planner::new(&src, whole(500), 1024, 256, 0).map(|s| s.unwrap().run).collect();
        assert_eq!(plans[1], Run { offset: 256, len: 244, alloc: Alloc::Zero });
        let src = Scripted { runs: vec![(300, Alloc::Data), (200, Alloc::Zero)], size: 500, bad: u64::MAX };
        let plans: Vec<Run> = Planner::new(&src, whole(500), 1024, 256, 0).map(|s| s.unwrap().run).collect();
        assert_eq!(plans, vec![Run { offset: 0, len: 500, alloc: Alloc::Data }]);
    }

    #[test]
    fn walk_hands_steps_over_in_order_with_their_work() {
        let src = Scripted { runs: vec![(4096, Alloc::Data), (8192, Alloc::Zero)], size: 40_000, bad: u64::MAX };
        let mut seen = Vec::new();
        let opts = Options { chunk: 1024, grain: 512, workers: 3, map: false, gap: 0 };
        walk(
            &src,
            whole(40_000),
            opts,
            |run, bytes| Ok::<_, ReadError>((run.offset, bytes.iter().map(|&b| b as u64).sum::<u64>())),
            |p| {
                match p {
                    Piece::Skip(r) => seen.push((r.offset, r.len, 0)),
                    Piece::Data { run, bytes, done, .. } => {
                        assert_eq!(done.0, run.offset);
                        assert_eq!(bytes.as_slice()[0], (run.offset % 251) as u8);
                        seen.push((run.offset, run.len, done.1));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
        let mut at = 0;
        for &(off, len, _) in &seen {
            assert_eq!(off, at, "in order, without gaps");
            at += len;
        }
        assert_eq!(at, 40_000);
        assert!(seen.contains(&(4096, 8192, 0)));
    }

    /// Short holes between data go inside the chunk's step and read as
    /// zeros (never read from the source, even into a recycled buffer that
    /// held data before); long ones and those at a chunk's end stay steps.
    #[test]
    fn short_holes_inside_a_chunk_are_zeros_in_its_buffer() {
        let (u, z, d) = (Alloc::Unallocated, Alloc::Zero, Alloc::Data);
        let runs = vec![(512, d), (512, u), (1024, d), (256, z), (256, d), (4096, u), (1024, d), (512, z), (512, d)];
        let size = runs.iter().map(|r| r.0).sum::<u64>() * 3;
        // The pattern three times over, so buffers are reused.
        let src = Scripted { runs: [runs.clone(), runs.clone(), runs].concat(), size, bad: u64::MAX };
        let steps: Vec<Step> = Planner::new(&src, whole(size), 4096, 256, 1024).map(Result::unwrap).collect();
        let first: Vec<(u64, u64, Alloc, Vec<Range<u64>>)> =
            steps.iter().take(3).map(|s| (s.run.offset, s.run.len, s.run.alloc, s.holes.clone())).collect();
        assert_eq!(
            first,
            vec![
                (0, 2560, d, vec![512..1024, 2048..2304]),
                (2560, 4096, u, vec![]),
                (6656, 4096, d, vec![7680..8192, 9216..9728]),
            ]
        );
        let opts = Options { chunk: 4096, grain: 256, workers: 1, map: false, gap: 1024 };
        let mut at = 0;
        walk(
            &src,
            whole(size),
            opts,
            |_, _| Ok::<_, ReadError>(()),
            |p| {
                if let Piece::Data { run, bytes, read, .. } = p {
                    let mut data = 0;
                    for (i, &b) in bytes.as_slice().iter().enumerate() {
                        let o = run.offset + i as u64;
                        let is_data = src.status(o, 1).unwrap().alloc == d;
                        assert_eq!(b, if is_data { (o % 251) as u8 } else { 0 }, "byte {o}");
                        data += u64::from(is_data);
                    }
                    assert_eq!(*read, data, "bytes read at {}", run.offset);
                }
                let run = match p {
                    Piece::Skip(r) | Piece::Data { run: r, .. } => r,
                };
                assert_eq!(run.offset, at);
                at = run.end();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(at, size);
    }

    #[test]
    fn a_read_error_or_a_consumer_error_ends_the_walk() {
        let opts = Options { chunk: 1024, grain: 512, workers: 2, map: false, gap: 0 };
        let src = Scripted { runs: vec![], size: 1 << 20, bad: 300_000 };
        let mut seen = 0;
        let r = walk(
            &src,
            whole(src.size),
            opts,
            |_, _| Ok::<_, ReadError>(()),
            |_| {
                seen += 1;
                Ok(())
            },
        );
        let e = r.unwrap_err();
        assert_eq!(e.offset, 299_008, "the chunk that reaches the bad byte");
        assert_eq!(seen, 292, "every chunk before it, in order");
        let src = Scripted { runs: vec![], size: 1 << 20, bad: u64::MAX };
        let r = walk(
            &src,
            whole(src.size),
            opts,
            |_, _| Ok::<_, io::Error>(()),
            |p| match p {
                Piece::Data { run, .. } if run.offset >= 10_240 => Err(io::Error::other("disk full")),
                _ => Ok(()),
            },
        );
        assert_eq!(r.unwrap_err().to_string(), "disk full");
    }
}
