//! Detects moments when the machine itself stops running the bench's threads at full speed.
//!
//! On a shared virtual machine the host may take a virtual CPU away, or slow it down, for tens
//! of milliseconds at a time, and the guest still counts that time as the thread's CPU time.
//! A latency tail can then come from the host rather than from the server under test. The probe
//! runs a fixed unit of work on its own thread every few milliseconds and reads the thread's CPU
//! clock around it: when a unit costs several times its usual CPU time, the CPU ran slower than
//! it can, and the probe records a stall window. The probe costs about 1% of one core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::client::now_micros;

/// Iterations of the fixed unit of work (tens of microseconds on a current CPU).
const UNIT_ITERATIONS: u32 = 20_000;

/// Pause between two units.
const PAUSE: Duration = Duration::from_millis(4);

/// A unit that costs this many times the median CPU time marks a stall.
const SLOW_FACTOR: u64 = 4;

/// Slow units closer together than this belong to one window.
const MERGE_GAP_US: u64 = 20_000;

/// One unit of work: when it started and ended (Unix microseconds) and the CPU time it took.
struct Unit {
    start_us: u64,
    end_us: u64,
    cpu_ns: u64,
}

/// A time span in which the machine ran the probe much slower than usual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallWindow {
    pub start_us: u64,
    pub end_us: u64,
}

impl StallWindow {
    pub fn duration_us(&self) -> u64 {
        self.end_us - self.start_us
    }

    /// Whether `[start_us, end_us]` overlaps the window.
    pub fn overlaps(&self, start_us: u64, end_us: u64) -> bool {
        start_us <= self.end_us && end_us >= self.start_us
    }
}

/// A running probe; [`StallProbe::finish`] stops it and returns the windows it saw.
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Unit>>,
}

impl StallProbe {
    pub fn start() -> std::io::Result<StallProbe> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("host-stall-probe".to_owned()).spawn(move || {
            let mut units = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                units.push(run_unit());
                std::thread::sleep(PAUSE);
            }
            units
        })?;
        Ok(StallProbe { stop, thread })
    }

    pub fn finish(self) -> StallReport {
        self.stop.store(true, Ordering::Relaxed);
        let units = self.thread.join().unwrap_or_default();
        StallReport::from_units(&units)
    }
}

/// The stall windows of a run, in time order.
#[derive(Debug, Default)]
pub struct StallReport {
    pub windows: Vec<StallWindow>,
    /// The run's length as the probe saw it, in microseconds.
    pub observed_us: u64,
}

impl StallReport {
    fn from_units(units: &[Unit]) -> StallReport {
        let Some(median) = median_cpu_ns(units) else { return StallReport::default() };
        let mut windows: Vec<StallWindow> = Vec::new();
        for unit in units.iter().filter(|unit| unit.cpu_ns > median * SLOW_FACTOR) {
            match windows.last_mut() {
                Some(last) if unit.start_us <= last.end_us + MERGE_GAP_US => last.end_us = unit.end_us,
                _ => windows.push(StallWindow { start_us: unit.start_us, end_us: unit.end_us }),
            }
        }
        let observed_us = match (units.first(), units.last()) {
            (Some(first), Some(last)) => last.end_us - first.start_us,
            _ => 0,
        };
        StallReport { windows, observed_us }
    }

    pub fn total_us(&self) -> u64 {
        self.windows.iter().map(StallWindow::duration_us).sum()
    }

    /// Whether anything in `[start_us, end_us]` happened during a stall.
    pub fn overlaps(&self, start_us: u64, end_us: u64) -> bool {
        let after = self.windows.partition_point(|window| window.end_us < start_us);
        self.windows.get(after).is_some_and(|window| window.overlaps(start_us, end_us))
    }
}

impl std::fmt::Display for StallReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let longest = self.windows.iter().map(StallWindow::duration_us).max().unwrap_or(0);
        write!(
            out,
            "{} windows in which the probe's fixed work took ≥{SLOW_FACTOR}× its usual CPU time; longest {:.1} ms, {:.2} s in all of {:.1} s",
            self.windows.len(),
            longest as f64 / 1000.0,
            self.total_us() as f64 / 1e6,
            self.observed_us as f64 / 1e6
        )
    }
}

fn median_cpu_ns(units: &[Unit]) -> Option<u64> {
    let mut costs: Vec<u64> = units.iter().map(|unit| unit.cpu_ns).collect();
    costs.sort_unstable();
    costs.get(costs.len() / 2).copied().filter(|median| *median > 0)
}

fn run_unit() -> Unit {
    let start_us = now_micros();
    let cpu_before = thread_cpu_ns();
    let mut state: u64 = start_us | 1;
    for _ in 0..UNIT_ITERATIONS {
        state =
            std::hint::black_box(state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407));
    }
    let cpu_ns = thread_cpu_ns().saturating_sub(cpu_before);
    Unit { start_us, end_us: now_micros(), cpu_ns }
}

/// The calling thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given and nothing else.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time);
    }
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(start_us: u64, cpu_ns: u64) -> Unit {
        Unit { start_us, end_us: start_us + cpu_ns / 1000, cpu_ns }
    }

    #[test]
    fn slow_units_close_together_make_one_window() {
        let mut units: Vec<Unit> = (0..100).map(|step| unit(step * 5_000, 40_000)).collect();
        units[10] = unit(50_000, 2_000_000);
        units[12] = unit(60_000, 1_000_000);
        units[80] = unit(400_000, 500_000);
        let report = StallReport::from_units(&units);
        assert_eq!(
            report.windows,
            vec![StallWindow { start_us: 50_000, end_us: 61_000 }, StallWindow { start_us: 400_000, end_us: 400_500 }]
        );
        assert_eq!(report.total_us(), 11_500);
        assert!(report.overlaps(45_000, 52_000));
        assert!(report.overlaps(400_100, 400_200));
        assert!(!report.overlaps(62_000, 399_000));
        assert!(!report.overlaps(500_000, 600_000));
    }

    #[test]
    fn a_steady_machine_has_no_windows() {
        let units: Vec<Unit> = (0..50).map(|step| unit(step * 5_000, 40_000 + step % 3 * 1_000)).collect();
        let report = StallReport::from_units(&units);
        assert!(report.windows.is_empty());
        assert_eq!(report.total_us(), 0);
    }
}
