//! Thread-per-core shards: one glommio executor per shard, placed on a core or not.
//!
//! Owns: starting executors (with a clear error when io_uring is unavailable) and the
//! shutdown signal. May call: nothing else in the crate.

pub mod shutdown;

use std::future::Future;
use std::thread::JoinHandle;

pub use shutdown::Shutdown;

/// Whether shards are pinned to CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Let the kernel schedule shard threads (measured faster on small VMs).
    Unbound,
    /// Shard i on CPU i.
    Pinned,
}

/// Why shards could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "cannot start a glommio executor: {0}. backbeat needs io_uring: check that \
         /proc/sys/kernel/io_uring_disabled is 0, that RLIMIT_MEMLOCK allows ~512 KiB per \
         shard (ulimit -l), and in a container that the seccomp profile allows io_uring \
         (e.g. docker run --security-opt seccomp=unconfined)"
    )]
    Start(String),
    #[error("shard {0} panicked")]
    Panicked(usize),
}

/// Memory each executor registers with io_uring for storage (DMA file) I/O. backbeat does
/// network I/O only, whose receive buffers glommio allocates per request, so glommio's
/// minimum: its default (10 MiB, touched and pinned when the executor starts) cost every
/// executor 10 MiB of RSS and its start-up CPU for nothing.
const IO_MEMORY: usize = 64 * 1024;

/// A glommio executor builder with backbeat's settings.
pub fn executor(placement: glommio::Placement) -> glommio::LocalExecutorBuilder {
    glommio::LocalExecutorBuilder::new(placement).io_memory(IO_MEMORY)
}

/// Runs `make(i)` on shard i for i in 0..count and waits for all to finish.
pub fn run<T, F, Fut>(count: usize, placement: Placement, make: F) -> Result<Vec<T>, ShardError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut handles: Vec<JoinHandle<Result<T, String>>> = Vec::with_capacity(count);
    for i in 0..count {
        let make = make.clone();
        let p = match placement {
            Placement::Unbound => glommio::Placement::Unbound,
            Placement::Pinned => glommio::Placement::Fixed(i % cpus),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || {
                let ex = executor(p).name(&format!("shard-{i}")).make();
                match ex {
                    Ok(ex) => {
                        let _ = tx.send(Ok(()));
                        Ok(ex.run(make(i)))
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        Err(e.to_string())
                    }
                }
            })
            .map_err(|e| ShardError::Start(e.to_string()))?;
        if let Ok(Err(e)) = rx.recv() {
            let _ = h.join();
            return Err(ShardError::Start(e));
        }
        handles.push(h);
    }
    let mut out = Vec::with_capacity(count);
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => return Err(ShardError::Start(e)),
            Err(_) => return Err(ShardError::Panicked(i)),
        }
    }
    Ok(out)
}

/// Runs one future on a fresh single executor on the current thread.
pub fn block_on<T, Fut: Future<Output = T>>(fut: Fut) -> Result<T, ShardError> {
    let ex = executor(glommio::Placement::Unbound)
        .make()
        .map_err(|e| ShardError::Start(e.to_string()))?;
    Ok(ex.run(fut))
}
