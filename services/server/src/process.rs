//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, …), read from `/proc/self` at every scrape. Where there is
//! no `/proc` (not Linux) they are left out.

use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{encode_counter, encode_gauge};

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`), 100 on every Linux platform.
const USER_HZ: f64 = 100.0;

pub(crate) fn encode(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let Some(stat) = Stat::read() else {
        return Ok(());
    };
    encode_counter(
        encoder,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        stat.cpu_seconds,
    )?;
    encode_gauge(
        encoder,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        stat.virtual_bytes,
    )?;
    if let Some(rss) = resident_bytes() {
        encode_gauge(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss,
        )?;
    }
    encode_gauge(
        encoder,
        "process_threads",
        "Number of OS threads in the process",
        stat.threads,
    )?;
    if let Some(boot) = boot_time() {
        encode_gauge(
            encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            boot + stat.start_ticks / USER_HZ,
        )?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        encode_gauge(
            encoder,
            "process_open_fds",
            "Number of open file descriptors",
            fds.count() as f64,
        )?;
    }
    if let Some(max) = max_fds() {
        encode_gauge(
            encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            max,
        )?;
    }
    Ok(())
}

struct Stat {
    cpu_seconds: f64,
    threads: f64,
    start_ticks: f64,
    virtual_bytes: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses; the fields follow the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 of proc(5), the state.
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        Some(Stat {
            cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
            threads: field(20)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Process;

    impl Collector for Process {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
        ) -> Result<(), std::fmt::Error> {
            super::encode(&mut encoder)
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn process_metrics_are_read_from_proc() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Process));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
            "process_threads ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "no {name} in\n{text}"
            );
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 0.0);
    }
}
