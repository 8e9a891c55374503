//! How long one CPU takes to see a value another CPU wrote: two threads
//! hand a counter back and forth through one atomic (both spin, so the
//! scheduler keeps them on different CPUs), and the time of a round trip
//! is halved.
//!
//! ```text
//! cross-cpu [ROUND_TRIPS]
//! ```
//!
//! On the two-CPU VM of `bench/README.md` this is about 40 ns for some
//! minutes and about 200 ns for others (the host moves the VM's CPUs
//! between cores that share a cache and cores that do not), and a server
//! whose threads share data is fast or slow with it. The benchmark scripts
//! print it before each run, so that a figure can be read with the state
//! the machine was in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let trips: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let turn = Arc::new(AtomicU64::new(0));
    let other = {
        let turn = turn.clone();
        std::thread::spawn(move || {
            for i in 0..trips {
                while turn.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                turn.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let start = Instant::now();
    for i in 0..trips {
        turn.store(2 * i + 1, Ordering::Release);
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    other
        .join()
        .map_err(|_| anyhow::anyhow!("the other thread panicked"))?;
    let one_way = elapsed.as_secs_f64() * 1e9 / trips as f64 / 2.0;
    println!("cross-CPU latency: {one_way:.0} ns one way");
    Ok(())
}
