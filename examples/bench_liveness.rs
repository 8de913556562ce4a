//! Benchmark of liveness checks: CPU per check and the steady-state cost for a table of online
//! resources.
//!
//! ```text
//! cargo run --release --example bench_liveness -- [--resources N] [--seconds S]
//! ```
//!
//! Everything runs in this process on one single-threaded tokio runtime, so the process CPU time
//! (`/proc/self/stat`) is the cost on one core. herald's check loop ([`herald::presence::liveness::run`])
//! gets `--resources` online resources and is switched on, which checks every one of them at
//! [`MAX_RATE`] (the round after a reconnect). An in-process fake server takes each IQ from the
//! connection's priority lane, parses it (as herald's connection parses an answer) and answers
//! with a pong through the [`IqTracker`], as the connection does for an answer it reads. The
//! fake server's work is counted too, so the figure is an upper bound of herald's own.
//!
//! Reported: checks per second, CPU µs per check, and the steady-state share of a core for the
//! same table at `liveness_interval = 5m` (resources / 300 checks per second × CPU per check).

use std::time::{Duration, Instant};

use herald::presence::liveness::{self, Change, MAX_RATE};
use herald::xmpp::handle::XmppHandle;
use herald::xmpp::IqTracker;
use minidom::Element;

/// This process's user + system CPU time (`/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Resident memory (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let resources = arg("--resources", 100_000) as usize;
    let seconds = arg("--seconds", 10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let tracker = IqTracker::new();
        let (handle, mut queues) = XmppHandle::new(tracker.clone(), "herald.localhost");
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = answered.clone();
        // The fake server: a pong for every ping.
        tokio::spawn(async move {
            while let Some(out) = queues.priority.recv().await {
                let Ok(text) = std::str::from_utf8(&out.xml) else { continue };
                let Ok(iq) = text.parse::<Element>() else { continue };
                let (Some(id), Some(to)) = (iq.attr("id"), iq.attr("to")) else { continue };
                let pong = format!(
                    "<iq xmlns='jabber:component:accept' type='result' id='{id}' from='{to}' to='herald.localhost'/>"
                );
                if let Ok(pong) = pong.parse::<Element>() {
                    tracker.resolve(pong);
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let rss0 = rss_kib();
        let (link, task) = liveness::channel();
        tokio::spawn(liveness::run(
            handle,
            Duration::from_secs(300),
            task,
        ));
        for i in 0..resources {
            let _ = link
                .changes
                .send(Change::Online(format!("user{i}@example.org/phone-{i:x}")));
        }
        let _ = link.changes.send(Change::Active(true));
        // Let the loop take the table in.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss1 = rss_kib();
        let (cpu0, t0, n0) = (
            cpu_time(),
            Instant::now(),
            answered.load(std::sync::atomic::Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, t1, n1) = (
            cpu_time(),
            Instant::now(),
            answered.load(std::sync::atomic::Ordering::Relaxed),
        );
        let checks = (n1 - n0) as f64;
        let wall = (t1 - t0).as_secs_f64();
        let cpu = (cpu1 - cpu0).as_secs_f64();
        let per_check_us = cpu / checks.max(1.0) * 1e6;
        let steady_rate = resources as f64 / 300.0;
        println!("resources: {resources}, window: {wall:.1} s (the round after a reconnect, at MAX_RATE = {MAX_RATE}/s)");
        println!(
            "memory of the schedule: {:.0} bytes per resource (VmRSS growth)",
            (rss1.saturating_sub(rss0) * 1024) as f64 / resources as f64
        );
        println!("checks answered: {checks} ({:.0}/s)", checks / wall);
        println!("CPU: {cpu:.3} s ({:.2} % of a core), {per_check_us:.1} µs per check (herald and the fake server)", 100.0 * cpu / wall);
        println!(
            "steady state at liveness_interval = 5m: {steady_rate:.0} checks/s -> {:.3} % of a core, {:.1} CPU s per hour",
            steady_rate * per_check_us / 1e4,
            steady_rate * per_check_us * 3600.0 / 1e6
        );
        drop(link);
    });
}
