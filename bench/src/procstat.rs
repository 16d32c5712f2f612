//! The broker's CPU and resident memory, sampled from /proc when it runs on this machine.

use std::path::Path;

use anyhow::{bail, Context};

use crate::result::BrokerUsage;

/// Finds the process whose command name (`/proc/PID/comm`) is `name`, e.g. `spool`,
/// `beam.smp` (RabbitMQ) or `nats-server`.
pub fn find_process(name: &str) -> anyhow::Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            // `spool bench` is named spool too.
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no process named {name} is running"),
        many => bail!("several processes are named {name} ({many:?}): pass --broker-pid"),
    }
}

/// Samples one process's CPU time and RSS.
pub struct ProcessSampler {
    pid: u32,
    ticks_per_s: f64,
    page_kib: f64,
    last: Option<(std::time::Instant, u64)>,
    cpu: Vec<f64>,
    rss_max_kib: f64,
}

impl ProcessSampler {
    pub fn new(pid: u32) -> anyhow::Result<ProcessSampler> {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process {pid}");
        }
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut s = ProcessSampler {
            pid,
            ticks_per_s: ticks.max(1) as f64,
            page_kib: page.max(1) as f64 / 1024.0,
            last: None,
            cpu: Vec::new(),
            rss_max_kib: 0.0,
        };
        s.sample();
        s.cpu.clear();
        Ok(s)
    }

    /// (utime + stime in ticks, rss in pages) of the process now.
    fn read(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // rest[0] is field 3 (state): utime is field 14, stime 15, rss 24.
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        let rss: u64 = f.get(21)?.parse().ok()?;
        Some((utime + stime, rss))
    }

    /// Takes a sample; returns the CPU use (100 = one core) since the previous one.
    pub fn sample(&mut self) -> Option<f64> {
        let (ticks, rss) = self.read()?;
        self.rss_max_kib = self.rss_max_kib.max(rss as f64 * self.page_kib);
        let now = std::time::Instant::now();
        let cpu = self.last.map(|(at, before)| {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            (ticks.saturating_sub(before) as f64 / self.ticks_per_s) / secs * 100.0
        });
        self.last = Some((now, ticks));
        if let Some(c) = cpu {
            self.cpu.push(c);
        }
        cpu
    }

    /// Forgets the samples so far (the warm-up's).
    pub fn reset(&mut self) {
        self.cpu.clear();
        self.rss_max_kib = 0.0;
    }

    pub fn usage(&self) -> BrokerUsage {
        let n = self.cpu.len().max(1) as f64;
        BrokerUsage {
            pid: self.pid,
            cpu_percent_mean: self.cpu.iter().sum::<f64>() / n,
            cpu_percent_max: self.cpu.iter().cloned().fold(0.0, f64::max),
            rss_mib_max: self.rss_max_kib / 1024.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let mut s = ProcessSampler::new(std::process::id()).unwrap();
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(200) {
            std::hint::black_box(busy.elapsed());
        }
        let cpu = s.sample().unwrap();
        assert!(cpu > 10.0, "a busy loop used {cpu}% CPU");
        assert!(s.usage().rss_mib_max > 1.0);
    }
}
