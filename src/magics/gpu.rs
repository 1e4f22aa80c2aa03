//! `%gpu`: the GPUs this notebook can use — name, memory, utilisation,
//! temperature, power, driver and CUDA versions, MIG devices and
//! `CUDA_VISIBLE_DEVICES` — from `nvidia-smi`, as text and as an HTML table.
//! `%gpu watch` keeps one display up to date until interrupted.
//!
//! Parsing is pure (unit-tested on captured output); missing values
//! (`[N/A]`, `[Not Supported]`) show as "–". Without a GPU or without
//! `nvidia-smi` the magic says so and what to check; it never fails the cell.

use super::args::words;
use super::{Call, ErrorInfo, Kind, Magic, MagicResult, text_result};
use crate::protocol::content::MimeBundle;
use ferrolab_tables::{Cell, Table, left};
use serde_json::{Map, Value};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn magics() -> Vec<Magic> {
    vec![Magic {
        name: "gpu",
        kind: Kind::Line,
        summary: "the GPUs: memory, utilisation, temperature, power, driver and CUDA",
        help: "%gpu                      one table of every visible GPU\n%gpu watch [SECONDS]      keep the table updated every SECONDS (default 2) until interrupted\n%gpu watch 1 --count 10   ... or for 10 updates\n\nReads `nvidia-smi`. Shows the driver and CUDA versions, MIG devices, and\nCUDA_VISIBLE_DEVICES as the Rust code sees it (set it with %env; nvidia-smi\nitself always lists every GPU). Without a GPU it says what to check.\n\nOut of GPU memory? Use a smaller batch size, free tensors you no longer\nneed, or check with %gpu whether another process holds the memory.",
        run: gpu,
    }]
}

/// Fields asked of `nvidia-smi --query-gpu`, in this order.
pub const QUERY_FIELDS: &str = "index,name,uuid,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw,power.limit,driver_version,mig.mode.current";

#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: String,
    pub name: String,
    pub uuid: String,
    pub memory_used_mib: Option<u64>,
    pub memory_total_mib: Option<u64>,
    pub utilization_percent: Option<u32>,
    pub temperature_c: Option<u32>,
    pub power_draw_w: Option<f64>,
    pub power_limit_w: Option<f64>,
    pub driver: Option<String>,
    pub mig_enabled: bool,
    pub mig_devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub gpus: Vec<Gpu>,
    pub cuda_version: Option<String>,
    pub visible_devices: Option<String>,
}

fn value(field: &str) -> Option<&str> {
    let field = field.trim();
    let missing = field.is_empty() || field.starts_with('[') || field.eq_ignore_ascii_case("n/a");
    (!missing).then_some(field)
}

/// Parses `--query-gpu=QUERY_FIELDS --format=csv,noheader,nounits` output.
pub fn parse_query(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() < 10 {
                return None;
            }
            let number = |i: usize| value(fields[i]).and_then(|v| v.parse::<f64>().ok());
            Some(Gpu {
                index: fields[0].trim().to_owned(),
                name: fields[1].trim().to_owned(),
                uuid: fields[2].trim().to_owned(),
                memory_used_mib: number(3).map(|v| v as u64),
                memory_total_mib: number(4).map(|v| v as u64),
                utilization_percent: number(5).map(|v| v as u32),
                temperature_c: number(6).map(|v| v as u32),
                power_draw_w: number(7),
                power_limit_w: number(8),
                driver: value(fields[9]).map(str::to_owned),
                mig_enabled: fields.get(10).and_then(|f| value(f)) == Some("Enabled"),
                mig_devices: Vec::new(),
            })
        })
        .collect()
}

/// Attaches the MIG devices listed by `nvidia-smi -L` to their GPUs.
pub fn attach_mig_devices(gpus: &mut [Gpu], listing: &str) {
    let mut current: Option<usize> = None;
    for line in listing.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("GPU ") {
            let index = rest.split(':').next().unwrap_or_default().trim();
            current = gpus.iter().position(|gpu| gpu.index == index);
        } else if let Some(rest) = trimmed.strip_prefix("MIG ")
            && let Some(gpu) = current
        {
            let profile = rest.split_whitespace().next().unwrap_or_default();
            let device = rest
                .split("Device")
                .nth(1)
                .and_then(|d| d.split(':').next())
                .map(str::trim)
                .unwrap_or_default();
            gpus[gpu]
                .mig_devices
                .push(format!("MIG {profile} (device {device})"));
        }
    }
}

/// `CUDA Version: 13.0` from the header of plain `nvidia-smi` output.
pub fn parse_cuda_version(text: &str) -> Option<String> {
    let after = text.split("CUDA Version:").nth(1)?;
    let version: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn memory(gpu: &Gpu) -> String {
    match (gpu.memory_used_mib, gpu.memory_total_mib) {
        (Some(used), Some(total)) => format!("{used} / {total} MiB"),
        (None, Some(total)) => format!("– / {total} MiB"),
        _ => "–".to_owned(),
    }
}

fn power(gpu: &Gpu) -> String {
    match (gpu.power_draw_w, gpu.power_limit_w) {
        (Some(draw), Some(limit)) => format!("{draw:.0} / {limit:.0} W"),
        (Some(draw), None) => format!("{draw:.0} W"),
        _ => "–".to_owned(),
    }
}

fn rows(report: &Report) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for gpu in &report.gpus {
        rows.push([
            gpu.index.clone(),
            gpu.name.clone(),
            memory(gpu),
            gpu.utilization_percent
                .map_or("–".to_owned(), |u| format!("{u}%")),
            gpu.temperature_c
                .map_or("–".to_owned(), |t| format!("{t}°C")),
            power(gpu),
        ]);
        for mig in &gpu.mig_devices {
            rows.push([
                String::new(),
                format!("└ {mig}"),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    rows
}

const HEADINGS: [&str; 6] = [
    "GPU",
    "Name",
    "Memory used / total",
    "Util",
    "Temp",
    "Power",
];

fn footer(report: &Report) -> String {
    let driver = report.gpus.iter().find_map(|gpu| gpu.driver.clone());
    let visible = match &report.visible_devices {
        Some(devices) => devices.clone(),
        None => "not set (all GPUs visible)".to_owned(),
    };
    format!(
        "Driver {} · CUDA {} · CUDA_VISIBLE_DEVICES: {visible}",
        show(driver),
        show(report.cuda_version.clone())
    )
}

/// The GPUs as one table (columns, MIG devices under their GPU, the driver
/// line as its footer).
fn table(report: &Report) -> Table {
    Table {
        columns: HEADINGS.iter().map(|title| left(title)).collect(),
        rows: rows(report)
            .into_iter()
            .map(|row| row.into_iter().map(Cell::from).collect())
            .collect(),
        caption: None,
        footer: Some(footer(report)),
    }
}

pub fn render_text(report: &Report) -> String {
    table(report).text()
}

pub fn render_html(report: &Report) -> String {
    table(report).html()
}

/// What is wrong when no table can be shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    NoNvidiaSmi,
    Failed(String),
    NoGpus,
}

impl Unavailable {
    pub fn explain(&self) -> String {
        match self {
            Unavailable::NoNvidiaSmi => "No GPU visible: `nvidia-smi` was not found on PATH.\n\
                 On Colab: Runtime → Change runtime type → pick a GPU, then reconnect.\n\
                 On a VM: install the NVIDIA driver (it provides nvidia-smi) and check that\n\
                 the GPU is attached (`lspci | grep -i nvidia`)."
                .to_owned(),
            Unavailable::Failed(message) => format!(
                "No GPU visible: nvidia-smi failed:\n{}\nThe driver may not be loaded (reboot after installing it) or the GPU is\nnot passed through to this container (docker run --gpus all).",
                message.trim()
            ),
            Unavailable::NoGpus => "No GPU visible: nvidia-smi lists no GPU.".to_owned(),
        }
    }
}

fn run_nvidia_smi(args: &[&str]) -> Result<String, Unavailable> {
    let output = Command::new("nvidia-smi")
        .args(args)
        .output()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                Unavailable::NoNvidiaSmi
            } else {
                Unavailable::Failed(error.to_string())
            }
        })?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stdout).into_owned();
        message.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(Unavailable::Failed(message));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Asks `nvidia-smi` for the current state of every GPU.
pub fn probe(visible_devices: Option<String>) -> Result<Report, Unavailable> {
    let query = format!("--query-gpu={QUERY_FIELDS}");
    let csv = run_nvidia_smi(&[&query, "--format=csv,noheader,nounits"])?;
    let mut gpus = parse_query(&csv);
    if gpus.is_empty() {
        return Err(Unavailable::NoGpus);
    }
    if gpus.iter().any(|gpu| gpu.mig_enabled)
        && let Ok(listing) = run_nvidia_smi(&["-L"])
    {
        attach_mig_devices(&mut gpus, &listing);
    }
    let cuda_version = run_nvidia_smi(&[])
        .ok()
        .as_deref()
        .and_then(parse_cuda_version);
    Ok(Report {
        gpus,
        cuda_version,
        visible_devices,
    })
}

fn bundle(report: &Report) -> MimeBundle {
    let mut data = MimeBundle::new();
    data.insert("text/plain".into(), Value::String(render_text(report)));
    data.insert("text/html".into(), Value::String(render_html(report)));
    data
}

/// The GPUs' names for the kernel banner: from the driver's /proc files, else
/// from `nvidia-smi -L`; empty without a GPU.
pub fn gpu_names() -> Vec<String> {
    let from_proc = gpu_models();
    if !from_proc.is_empty() {
        return from_proc;
    }
    run_nvidia_smi(&["-L"])
        .map(|listing| parse_gpu_names(&listing))
        .unwrap_or_default()
}

/// `GPU 0: NVIDIA H100 80GB HBM3 (UUID: …)` → `NVIDIA H100 80GB HBM3`.
fn parse_gpu_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("GPU "))
        .filter_map(|rest| rest.split_once(": "))
        .map(|(_, name)| {
            name.split(" (UUID")
                .next()
                .unwrap_or(name)
                .trim()
                .to_owned()
        })
        .collect()
}

/// GPU models from the driver's /proc files (instant).
fn gpu_models() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("information")).ok())
        .filter_map(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("Model:")
                    .map(|model| model.trim().to_owned())
            })
        })
        .collect()
}

fn gpu(call: &mut Call) -> MagicResult {
    let words = words("gpu", call.args)?;
    let visible = call.state.env_var("CUDA_VISIBLE_DEVICES");
    match words.first().map(String::as_str) {
        None => Ok(match probe(visible) {
            Ok(report) => Some(bundle(&report)),
            Err(problem) => text_result(problem.explain()),
        }),
        Some("watch") => watch(call, &words[1..], visible),
        Some(other) => Err(ErrorInfo::usage(format!(
            "%gpu: unknown argument `{other}` (use `%gpu` or `%gpu watch [SECONDS] [--count N]`)"
        ))),
    }
}

fn watch(call: &mut Call, args: &[String], visible: Option<String>) -> MagicResult {
    let mut interval = 2.0f64;
    let mut count: Option<u64> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--count" {
            count = rest.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0);
            if count.is_none() {
                return Err(ErrorInfo::usage(
                    "%gpu watch --count needs a positive number",
                ));
            }
        } else {
            interval = arg
                .parse::<f64>()
                .ok()
                .filter(|seconds| *seconds >= 0.1)
                .ok_or_else(|| {
                    ErrorInfo::usage(format!(
                        "%gpu watch: `{arg}` is not a number of seconds (≥ 0.1)"
                    ))
                })?;
        }
    }
    let display_id = format!("ferrolab-gpu-{}", uuid::Uuid::new_v4().simple());
    let render = |visible: &Option<String>| match probe(visible.clone()) {
        Ok(report) => bundle(&report),
        Err(problem) => text_result(problem.explain()).unwrap_or_default(),
    };
    call.cell
        .display(render(&visible), Map::new(), Some(&display_id));
    let mut updates = 0u64;
    while count.is_none_or(|count| updates < count) {
        let deadline = Instant::now() + Duration::from_secs_f64(interval);
        while Instant::now() < deadline {
            if call.cell.is_cancelled() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        call.cell
            .update_display(render(&visible), Map::new(), &display_id);
        updates += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_GPUS: &str = "\
0, NVIDIA H100 80GB HBM3, GPU-5b3c1d2e-0000-1111-2222-333344445555, 1024, 81559, 37, 41, 118.52, 700.00, 580.159.04, Disabled
1, Tesla T4, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee, 0, 15360, 0, 35, 9.87, 70.00, 580.159.04, [N/A]
";

    const MIG: &str = "\
0, NVIDIA A100-SXM4-40GB, GPU-11111111-2222-3333-4444-555555555555, 13, 40960, [N/A], 30, 55.10, 400.00, 535.104.05, Enabled
";

    const MIG_LIST: &str = "\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 3g.20gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
  MIG 2g.10gb     Device  1: (UUID: MIG-bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee)
";

    const MISSING: &str = "0, NVIDIA GeForce RTX 3060, GPU-x, [N/A], 12288, [Not Supported], [N/A], [N/A], [N/A], 550.54.14, [N/A]\n";

    const HEADER: &str = "\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |
|-----------------------------------------+------------------------+----------------------+
";

    #[test]
    fn parses_several_gpus() {
        let gpus = parse_query(TWO_GPUS);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_used_mib, Some(1024));
        assert_eq!(gpus[0].memory_total_mib, Some(81559));
        assert_eq!(gpus[0].utilization_percent, Some(37));
        assert_eq!(gpus[0].power_draw_w, Some(118.52));
        assert_eq!(gpus[1].name, "Tesla T4");
        assert!(!gpus[1].mig_enabled);
        let report = Report {
            gpus,
            cuda_version: parse_cuda_version(HEADER),
            visible_devices: Some("1".into()),
        };
        let text = render_text(&report);
        assert!(text.contains("1024 / 81559 MiB"), "{text}");
        assert!(text.contains("119 / 700 W"), "{text}");
        assert!(
            text.ends_with("Driver 580.159.04 · CUDA 13.0 · CUDA_VISIBLE_DEVICES: 1"),
            "{text}"
        );
        let html = render_html(&report);
        assert!(html.starts_with("<table>") && html.contains("<td>Tesla T4</td>"));
    }

    #[test]
    fn mig_devices_are_listed_under_their_gpu() {
        let mut gpus = parse_query(MIG);
        assert!(gpus[0].mig_enabled);
        assert_eq!(gpus[0].utilization_percent, None);
        attach_mig_devices(&mut gpus, MIG_LIST);
        assert_eq!(
            gpus[0].mig_devices,
            vec!["MIG 3g.20gb (device 0)", "MIG 2g.10gb (device 1)"]
        );
        let text = render_text(&Report {
            gpus,
            ..Report::default()
        });
        assert!(text.contains("└ MIG 2g.10gb (device 1)"), "{text}");
        assert!(
            text.contains("CUDA – · CUDA_VISIBLE_DEVICES: not set"),
            "{text}"
        );
    }

    #[test]
    fn missing_and_unsupported_fields_show_a_dash() {
        let gpus = parse_query(MISSING);
        let gpu = &gpus[0];
        assert_eq!(gpu.memory_used_mib, None);
        assert_eq!(gpu.memory_total_mib, Some(12288));
        assert_eq!(gpu.temperature_c, None);
        assert_eq!(gpu.power_draw_w, None);
        let text = render_text(&Report {
            gpus: gpus.clone(),
            ..Report::default()
        });
        assert!(text.contains("– / 12288 MiB"), "{text}");
    }

    #[test]
    fn garbage_and_short_lines_are_skipped() {
        assert!(parse_query("No devices were found\n").is_empty());
        assert!(parse_query("").is_empty());
        assert_eq!(parse_cuda_version("no header"), None);
        assert_eq!(parse_cuda_version(HEADER).as_deref(), Some("13.0"));
    }

    #[test]
    fn html_is_escaped() {
        let mut gpus = parse_query(MISSING);
        gpus[0].name = "<script>".into();
        assert!(
            render_html(&Report {
                gpus,
                ..Report::default()
            })
            .contains("&lt;script&gt;")
        );
    }

    #[test]
    fn names_from_the_listing() {
        assert_eq!(parse_gpu_names(MIG_LIST), vec!["NVIDIA A100-SXM4-40GB"]);
        assert!(parse_gpu_names("No devices were found").is_empty());
    }

    #[test]
    fn explanations_point_at_what_to_check() {
        assert!(
            Unavailable::NoNvidiaSmi
                .explain()
                .contains("Change runtime type")
        );
        assert!(
            Unavailable::Failed("NVIDIA-SMI has failed".into())
                .explain()
                .contains("driver")
        );
    }
}
