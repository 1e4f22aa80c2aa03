//! `usage_request` (not in the spec; ipykernel's, used by jupyter-resource-usage):
//! CPU and memory of the kernel process and its children, and of the host.

use serde_json::{Value, json};
use sysinfo::{Pid, ProcessRefreshKind, System};

pub struct UsageProbe {
    system: System,
}

impl Default for UsageProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageProbe {
    pub fn new() -> Self {
        UsageProbe {
            system: System::new(),
        }
    }

    /// The reply content; CPU percentages are since the previous call.
    pub fn sample(&mut self) -> Value {
        let me = std::process::id();
        let mut family = crate::os::process_tree::descendants(
            &mut self.system,
            me,
            None,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        family.push(me);
        let family: Vec<Pid> = family.into_iter().map(Pid::from_u32).collect();
        self.system.refresh_memory();
        self.system.refresh_cpu_usage();
        let (cpu, memory) = family.iter().fold((0.0f32, 0u64), |(cpu, memory), pid| {
            match self.system.process(*pid) {
                Some(process) => (cpu + process.cpu_usage(), memory + process.memory()),
                None => (cpu, memory),
            }
        });
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        let used = total.saturating_sub(available);
        let percent = if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        };
        json!({
            "hostname": System::host_name().unwrap_or_default(),
            "pid": std::process::id(),
            "kernel_cpu": cpu,
            "kernel_memory": memory,
            "host_cpu_percent": self.system.global_cpu_usage(),
            "cpu_count": self.system.cpus().len().max(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
            "host_virtual_memory": {
                "total": total,
                "available": available,
                "percent": percent,
                "used": used,
                "free": self.system.free_memory(),
            },
        })
    }
}
