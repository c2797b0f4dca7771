//! `cargo xtask bench`: the reference workloads M1..M6 timed as `shared/bench/torch_ref.py`
//! times them (5 warm-up steps, then N timed steps, steps/s, peak RSS), each in its own
//! process so its peak memory is its own; with `--vs-torch`, the PyTorch reference runs
//! alternately with forja in the same process tree and the ratio is printed per workload.

mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

pub use workloads::NAMES;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Args)]
pub struct BenchArgs {
    /// Workloads to run: M1..M6 or `all`.
    #[arg(default_value = "all")]
    workloads: Vec<String>,
    /// Timed steps per run (default: per workload, about 5-15 s each).
    #[arg(long)]
    steps: Option<usize>,
    /// Samples per step (default: the spec's, 128 or M5 64, M6 16).
    #[arg(long)]
    batch: Option<usize>,
    /// CPU threads (RAYON_NUM_THREADS for forja, torch.set_num_threads for PyTorch).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Runs per workload (and implementation); the summary takes the median.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also run the PyTorch reference with this Python (alternating with forja) and print ratios.
    #[arg(long, value_name = "PYTHON")]
    vs_torch: Option<PathBuf>,
    /// The PyTorch reference script.
    #[arg(long, default_value = "xtask/torch_ref.py")]
    torch_script: PathBuf,
    /// Time forja's layers without its CPU kernels (candle's own ops), for comparison.
    #[arg(long)]
    no_kernels: bool,
}

/// forja's default timed steps per workload (the reference's are M1 1000 ... M6 25).
fn default_steps(name: &str) -> usize {
    match name {
        "M1" => 300,
        "M2" => 10,
        "M3" => 1000,
        "M4" => 100,
        "M5" => 40,
        "M6" => 8,
        _ => 10,
    }
}

/// Peak resident set size of this process in MiB (VmHWM).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs one workload in this process and prints its JSON line (the `bench-one` command).
pub fn run_one(name: &str, steps: usize, warmup: usize, batch: Option<usize>) -> Res<()> {
    let batch = batch.unwrap_or_else(|| workloads::default_batch(name));
    let mut w = workloads::build(name, batch)?;
    for _ in 0..warmup {
        (w.step)()?;
    }
    let t0 = Instant::now();
    let mut loss = f32::NAN;
    for _ in 0..steps {
        loss = (w.step)()?;
    }
    let dt = t0.elapsed().as_secs_f64();
    let out = json!({
        "workload": name,
        "impl": "forja",
        "kernels": forja_layers::kernels::enabled(),
        "threads": candle_core::utils::get_num_threads(),
        "batch": w.batch,
        "steps": steps,
        "steps_per_s": round(steps as f64 / dt, 4),
        "samples_per_s": round((steps * w.batch) as f64 / dt, 2),
        "peak_rss_mb": round(peak_rss_mb().unwrap_or(f64::NAN), 1),
        "params": w.params,
        "wall_s": round(dt, 3),
        "final_loss": round(loss as f64, 5),
    });
    println!("{out}");
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Runs `cmd`, returning the last stdout line that parses as JSON; stderr passes through.
fn json_of(mut cmd: Command, what: &str) -> Res<Value> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{what} failed ({}): {stdout}", out.status).into());
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("{what}: no JSON line in its output: {stdout}").into())
}

fn forja_cmd(name: &str, args: &BenchArgs) -> Res<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("bench-one")
        .arg(name)
        .arg("--steps")
        .arg(
            args.steps
                .unwrap_or_else(|| default_steps(name))
                .to_string(),
        )
        .env("RAYON_NUM_THREADS", args.threads.to_string());
    if let Some(batch) = args.batch {
        cmd.arg("--batch").arg(batch.to_string());
    }
    if args.no_kernels {
        cmd.env(forja_layers::kernels::ENV, "off");
    }
    Ok(cmd)
}

fn torch_cmd(python: &Path, name: &str, args: &BenchArgs) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(&args.torch_script)
        .arg(name)
        .arg("--threads")
        .arg(args.threads.to_string());
    if let Some(steps) = args.steps {
        cmd.arg("--steps").arg(steps.to_string());
    }
    if let Some(batch) = args.batch {
        cmd.arg("--batch").arg(batch.to_string());
    }
    cmd
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn field(runs: &[Value], key: &str) -> Vec<f64> {
    runs.iter().filter_map(|r| r[key].as_f64()).collect()
}

/// The `bench` command: every requested workload, `rounds` times, alternating with PyTorch.
pub fn bench(args: BenchArgs) -> Res<()> {
    let names: Vec<String> = if args.workloads.iter().any(|w| w == "all") {
        NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.workloads.iter().map(|w| w.to_uppercase()).collect()
    };
    if let Some(bad) = names.iter().find(|n| !NAMES.contains(&n.as_str())) {
        return Err(format!("unknown workload `{bad}` (M1..M6 or all)").into());
    }
    if args.vs_torch.is_some() && !args.torch_script.is_file() {
        return Err(format!(
            "the PyTorch reference script {} is not there (run from the repository root or pass --torch-script)",
            args.torch_script.display()
        )
        .into());
    }
    for name in &names {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            let r = json_of(forja_cmd(name, &args)?, &format!("forja {name}"))?;
            println!("{r}");
            ours.push(r);
            if let Some(python) = &args.vs_torch {
                let r = json_of(torch_cmd(python, name, &args), &format!("pytorch {name}"))?;
                println!("{r}");
                theirs.push(r);
            }
        }
        if theirs.is_empty() {
            continue;
        }
        let (f, t) = (
            median(field(&ours, "steps_per_s")),
            median(field(&theirs, "steps_per_s")),
        );
        let torch_import = median(field(&theirs, "import_rss_mb"));
        let summary = json!({
            "workload": name,
            "rounds": ours.len(),
            "forja_steps_per_s": f,
            "pytorch_steps_per_s": t,
            "ratio": round(f / t, 3),
            "forja_peak_rss_mb": median(field(&ours, "peak_rss_mb")),
            "pytorch_peak_rss_mb": median(field(&theirs, "peak_rss_mb")),
            "pytorch_rss_above_import_mb": round(median(field(&theirs, "peak_rss_mb")) - torch_import, 1),
        });
        println!("{summary}");
    }
    Ok(())
}
