//! How much host memory this process could still take: the operating system's own estimate,
//! read so that a model whose batch buffers cannot fit is refused with a message before they
//! are allocated one by one until the system kills the process.

/// Bytes of host memory still available to this process, when the system says: Linux's
/// `MemAvailable`, lowered to what a cgroup memory limit leaves (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), `None` elsewhere or when unreadable.
pub(crate) fn free_host_memory() -> Option<u64> {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_available(&s))?;
    let limited = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ]
    .iter()
    .find_map(|(limit, usage)| {
        let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
        Some(read(limit)?.saturating_sub(read(usage)?))
    });
    Some(limited.map_or(available, |l| l.min(available)))
}

/// The `MemAvailable` line of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(meminfo), Some(2 << 20));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(free_host_memory().is_some_and(|b| b > 0));
    }

    /// A buffer of twice the free memory is refused with a message instead of being zero-filled
    /// into the system's out-of-memory killer (Linux would grant the address space).
    #[test]
    fn the_cpu_refuses_a_buffer_larger_than_the_free_memory() {
        use crate::device::Device;
        let Some(free) = free_host_memory() else { return };
        let floats = usize::try_from(free / 2).unwrap_or(usize::MAX);
        let err = crate::cpu::Cpu.alloc(floats).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cannot allocate") && err.contains("GiB is free"), "{err}");
    }
}
