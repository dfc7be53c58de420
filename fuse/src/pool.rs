//! A fixed set of worker threads fed through one queue. The FUSE session loop
//! reads requests one at a time; it hands each request (with its reply
//! object) to a pool so that a slow read never holds up the next request.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Pool {
    /// `None` once the pool is shut down; workers exit when the queue drains.
    tx: Mutex<Option<Sender<Job>>>,
}

impl Pool {
    pub(crate) fn new(name: &str, threads: usize) -> std::io::Result<Pool> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            thread::Builder::new().name(format!("{name}-{i}")).spawn(move || worker(&rx))?;
        }
        Ok(Pool { tx: Mutex::new(Some(tx)) })
    }

    /// Queues `job`. After shutdown the job runs on the calling thread, so a
    /// request is always answered.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let refused = match &*lock(&self.tx) {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            job();
        }
    }

    /// Stops accepting jobs; workers finish what is queued, then exit.
    pub(crate) fn shutdown(&self) {
        lock(&self.tx).take();
    }
}

/// A poisoned lock still guards consistent data here (a sender or a
/// receiver), so a panic elsewhere must not stop the pool.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match lock(rx).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking tree must not kill the worker: the reply object is
        // dropped during unwinding, and fuser answers EIO for it.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_concurrently_and_survive_panics() {
        let pool = Pool::new("t", 2).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        pool.run(|| panic!("a tree bug"));
        // One job blocks until released; the other must still finish.
        let d = done_tx.clone();
        pool.run(move || {
            release_rx.recv().unwrap();
            d.send(1).unwrap();
        });
        let d = done_tx.clone();
        pool.run(move || d.send(2).unwrap());
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        release_tx.send(()).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        pool.shutdown();
        // After shutdown jobs run inline.
        let d = done_tx;
        pool.run(move || d.send(3).unwrap());
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(1)).unwrap(), 3);
    }
}
