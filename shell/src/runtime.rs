//! The process-wide smol executor and signal delivery.

use std::sync::Arc;

/// An executor run by one thread per CPU (plus whoever calls `run` on it).
pub fn executor() -> Arc<smol::Executor<'static>> {
    let exec = Arc::new(smol::Executor::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for i in 0..threads {
        let e = exec.clone();
        std::thread::Builder::new()
            .name(format!("shardgate-worker-{i}"))
            .spawn(move || smol::block_on(e.run(futures_lite::future::pending::<()>())))
            .expect("cannot start a worker thread");
    }
    exec
}

/// Deliver the given signals on a channel (a dedicated thread waits on signal-hook).
pub fn signals(which: &[i32]) -> async_channel::Receiver<i32> {
    let (tx, rx) = async_channel::unbounded();
    let mut sigs =
        signal_hook::iterator::Signals::new(which).expect("cannot install signal handlers");
    std::thread::Builder::new()
        .name("shardgate-signals".into())
        .spawn(move || {
            for s in sigs.forever() {
                if tx.send_blocking(s).is_err() {
                    return;
                }
            }
        })
        .expect("cannot start the signal thread");
    rx
}
