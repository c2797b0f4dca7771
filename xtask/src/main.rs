//! forja's command line, run as `cargo xtask <command>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
use forja_data::catalog;
use forja_train::{registry, run, OptimizerKind, RunConfig, Schedule};
// Linked for its `inventory` registrations: the models are found through the registry.
use forja_generative as _;
use forja_nets as _;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "forja: train, evaluate and list deep-learning models",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered models (name, family, summary, default dataset).
    List,
    /// List the known datasets: shape, classes, source, and whether their files were found.
    Datasets {
        /// Also look for file datasets in this directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Train a model; creates runs/MODEL-TIMESTAMP/ (or continues one with --resume).
    Train(Box<TrainArgs>),
    /// Print a model's layer table (parameters and tensor shapes per layer), the output shape of each stage, and the total.
    Summary {
        /// Model name (see `cargo xtask list`).
        model: String,
        /// Input shape as C,H,W (default 1,28,28, the shape of forja's datasets).
        #[arg(long, value_parser = parse_shape)]
        input: Option<[usize; 3]>,
        /// Number of classes (default 10).
        #[arg(long)]
        classes: Option<usize>,
    },
    /// Re-evaluate a saved run (its best checkpoint, else its last) on its test split.
    Eval {
        /// The run directory, e.g. runs/lenet5-20261124-060000.
        run_dir: PathBuf,
        /// VAEs: importance samples of the IWAE bound on -log p(x) (training reports k = 64).
        #[arg(long, value_name = "K")]
        iwae_k: Option<usize>,
    },
    /// Fréchet distance (FID) between a generative run's samples (its last checkpoint) and its
    /// test images, in the feature space of a trained classifier's penultimate layer.
    Fid {
        /// The generative run, e.g. runs/dcgan-20261124-230000.
        run_dir: PathBuf,
        /// A classifier run on the same data whose features to use, e.g. runs/lenet5-....
        #[arg(long)]
        classifier: PathBuf,
        /// Images on each side (at most the test split's size).
        #[arg(long, default_value_t = 10_000)]
        samples: usize,
    },
    /// Time the reference workloads M1..M6 (shared/bench/SPECS.md): one JSON line per run;
    /// with --vs-torch, PyTorch's reference alternately and the ratio per workload.
    Bench(bench::BenchArgs),
    /// One workload in this process (what `bench` runs in a child process per workload).
    #[command(hide = true)]
    BenchOne {
        workload: String,
        #[arg(long)]
        steps: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long)]
        batch: Option<usize>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Opt {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sched {
    Constant,
    Step,
    Cosine,
}

#[derive(Args)]
struct TrainArgs {
    /// Model name (see `cargo xtask list`).
    model: String,
    /// Continue the run in this directory from its last checkpoint (only --epochs may change).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train for this many epochs in total.
    #[arg(long)]
    epochs: Option<usize>,
    #[command(flatten)]
    hyper: Hyper,
    /// Directory that receives the new run directory.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Hide the live progress bar (epoch summaries are still printed).
    #[arg(long)]
    no_progress: bool,
}

/// Settings fixed at the start of a run.
#[derive(Args)]
struct Hyper {
    /// Dataset name (see `cargo xtask datasets`); defaults to the model's.
    #[arg(long)]
    dataset: Option<String>,
    /// Directory holding the dataset's files (IDX: train-images-idx3-ubyte[.gz], ...).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<Opt>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Momentum (SGD, RMSprop).
    #[arg(long)]
    momentum: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    schedule: Option<Sched>,
    /// Step schedule: decay every N epochs.
    #[arg(long, default_value_t = 10)]
    step_every: usize,
    /// Step schedule: decay factor.
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    /// Cosine schedule: final learning-rate factor.
    #[arg(long, default_value_t = 0.0)]
    min_factor: f64,
    /// Linear learning-rate warm-up over N steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip_norm: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Early stopping: stop after N epochs without a better test metric.
    #[arg(long)]
    patience: Option<usize>,
    /// Use only the first N training samples.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use only the first N test samples.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Augmentation: mirror training images left-right at random.
    #[arg(long)]
    flip: bool,
    /// Augmentation: pad training images by N pixels and crop back at random (translate by up to N).
    #[arg(long, value_name = "N")]
    crop: Option<usize>,
    /// Augmentation: rotate training images by a random angle in [-D, D] degrees.
    #[arg(long, value_name = "D")]
    rotate: Option<f32>,
    /// Augmentation: elastic deformation by up to ALPHA pixels, smoothed over SIGMA pixels
    /// (image and mask together); `0,0` turns a model's default off.
    #[arg(long, value_name = "ALPHA,SIGMA", value_parser = pixel_pair)]
    elastic: Option<[f32; 2]>,
}

/// Two numbers written `A,B`.
fn pixel_pair(s: &str) -> Result<[f32; 2], String> {
    let (a, b) = s.split_once(',').unwrap_or((s, ""));
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => Ok([a, b]),
        _ => Err(format!("expected two numbers ALPHA,SIGMA, got {s:?}")),
    }
}

impl Hyper {
    /// Flags the user gave, by name (to refuse them when resuming).
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--dataset", self.dataset.is_some()),
            ("--data-dir", self.data_dir.is_some()),
            ("--batch-size", self.batch_size.is_some()),
            ("--optimizer", self.optimizer.is_some()),
            ("--lr", self.lr.is_some()),
            ("--momentum", self.momentum.is_some()),
            ("--nesterov", self.nesterov),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--schedule", self.schedule.is_some()),
            ("--warmup", self.warmup.is_some()),
            ("--clip-norm", self.clip_norm.is_some()),
            ("--seed", self.seed.is_some()),
            ("--patience", self.patience.is_some()),
            ("--limit-train", self.limit_train.is_some()),
            ("--limit-test", self.limit_test.is_some()),
            ("--flip", self.flip),
            ("--crop", self.crop.is_some()),
            ("--rotate", self.rotate.is_some()),
            ("--elastic", self.elastic.is_some()),
        ];
        flags
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| f)
            .collect()
    }

    fn apply(self, cfg: &mut RunConfig) {
        if let Some(d) = self.dataset {
            cfg.dataset = d;
        }
        cfg.data_dir = self.data_dir.or(cfg.data_dir.take());
        let o = &mut cfg.optimizer;
        if let Some(k) = self.optimizer {
            o.kind = match k {
                Opt::Sgd => OptimizerKind::Sgd,
                Opt::Adam => OptimizerKind::Adam,
                Opt::Adamw => OptimizerKind::Adamw,
                Opt::Rmsprop => OptimizerKind::Rmsprop,
            };
        }
        o.lr = self.lr.unwrap_or(o.lr);
        o.momentum = self.momentum.unwrap_or(o.momentum);
        o.nesterov |= self.nesterov;
        o.weight_decay = self.weight_decay.unwrap_or(o.weight_decay);
        if let Some(s) = self.schedule {
            cfg.schedule = match s {
                Sched::Constant => Schedule::Constant,
                Sched::Step => Schedule::Step {
                    every: self.step_every,
                    gamma: self.gamma,
                },
                Sched::Cosine => Schedule::Cosine {
                    min_factor: self.min_factor,
                },
            };
        }
        cfg.batch_size = self.batch_size.unwrap_or(cfg.batch_size);
        cfg.warmup_steps = self.warmup.unwrap_or(cfg.warmup_steps);
        cfg.clip_norm = self.clip_norm.or(cfg.clip_norm);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.patience = self.patience.or(cfg.patience);
        cfg.limit_train = self.limit_train.or(cfg.limit_train);
        cfg.limit_test = self.limit_test.or(cfg.limit_test);
        cfg.augment.flip |= self.flip;
        cfg.augment.crop_padding = self.crop.unwrap_or(cfg.augment.crop_padding);
        cfg.augment.rotate_degrees = self.rotate.unwrap_or(cfg.augment.rotate_degrees);
        if let Some(e) = self.elastic {
            cfg.augment.elastic = (e[0] > 0.0).then_some(e);
        }
    }
}

fn list() {
    let models = registry::models();
    let w = models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:w$}  {:8}  {:14}  SUMMARY", "NAME", "FAMILY", "DATASET");
    for m in models {
        println!(
            "{:w$}  {:8}  {:14}  {}",
            m.name, m.family, m.default_dataset, m.summary
        );
    }
}

fn datasets(data_dir: Option<PathBuf>) {
    let entries = catalog::entries();
    let w = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:w$}  {:9}  {:7}  {:44}  SUMMARY",
        "NAME", "SHAPE", "CLASSES", "SOURCE"
    );
    for e in entries {
        let shape = if e.shape.is_empty() {
            "any".to_string()
        } else {
            e.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        };
        let classes = e.classes.map_or("any".to_string(), |c| c.to_string());
        let source = match e.source {
            catalog::Source::Embedded => "embedded (generated)".to_string(),
            catalog::Source::Hub { repo } => format!("Hugging Face Hub {repo}, cached"),
            catalog::Source::Files { .. } => match e.locate(data_dir.as_deref()) {
                Some(dir) => format!("found in {}", dir.display()),
                None => "files not found".to_string(),
            },
        };
        println!(
            "{:w$}  {shape:9}  {classes:7}  {source:44}  {}",
            e.name, e.summary
        );
    }
}

fn train(args: TrainArgs) -> forja_train::Result<()> {
    let device = candle_core::Device::Cpu;
    let progress = !args.no_progress;
    let summary = if let Some(dir) = &args.resume {
        let given = args.hyper.given();
        if !given.is_empty() {
            return Err(forja_train::TrainError::Config(format!(
                "a resumed run keeps its configuration; only --epochs may change (got {})",
                given.join(", ")
            )));
        }
        let cfg = run::load_config(dir)?;
        if cfg.model != args.model {
            return Err(forja_train::TrainError::Config(format!(
                "{} is a run of `{}`, not `{}`",
                dir.display(),
                cfg.model,
                args.model
            )));
        }
        run::resume(dir, args.epochs, &device, progress)?
    } else {
        let entry = registry::find(&args.model)?;
        let mut cfg = RunConfig::new(entry.name, entry.default_dataset);
        (entry.configure)(&mut cfg);
        cfg.epochs = args.epochs.unwrap_or(cfg.epochs);
        args.hyper.apply(&mut cfg);
        cfg.validate()?;
        // Open the data before creating the run directory, so a missing dataset leaves nothing behind.
        let data = run::open_data(&cfg)?;
        let dir = run::new_run_dir(&args.runs_dir, entry.name)?;
        println!("run directory: {}", dir.display());
        run::train_on(cfg, data, &dir, &device, progress)?
    };
    let best = match (summary.best, summary.best_epoch) {
        (Some(b), Some(e)) => format!(", best {b:.4} at epoch {e}"),
        _ => String::new(),
    };
    println!(
        "done: {} epochs{best}; results in {}",
        summary.epochs_done,
        summary.run_dir.display()
    );
    Ok(())
}

fn eval(run_dir: PathBuf, iwae_k: Option<usize>) -> forja_train::Result<()> {
    let device = candle_core::Device::Cpu;
    let mut saved = run::SavedRun::open(&run_dir, &device, false)?;
    if let Some(k) = iwae_k {
        saved.task.set_importance_samples(k)?;
    }
    let metrics = saved.evaluate(&device)?;
    println!(
        "{} on {} (test split), checkpoint {}",
        saved.cfg.model,
        saved.cfg.dataset,
        saved.checkpoint.display()
    );
    for (k, v) in &metrics {
        if k == "accuracy" {
            println!("  {k}: {v:.4} ({:.2}%)", v * 100.0);
        } else {
            println!("  {k}: {v:.4}");
        }
    }
    Ok(())
}

fn fid(run_dir: PathBuf, classifier: PathBuf, samples: usize) -> forja_train::Result<()> {
    let device = candle_core::Device::Cpu;
    let mut generator = run::SavedRun::open(&run_dir, &device, true)?;
    let mut features = run::SavedRun::open(&classifier, &device, false)?;
    let report = forja_train::fid::measure(&mut generator, &mut features, samples, &device)?;
    println!(
        "{} on {}: FID {:.3} ({} samples vs {} test images; features of {}, {})",
        generator.cfg.model,
        generator.cfg.dataset,
        report.samples,
        report.count,
        report.count,
        features.cfg.model,
        features.checkpoint.display()
    );
    println!(
        "reference: {} training images vs the same test images score {:.3}",
        report.count, report.train_vs_test
    );
    Ok(())
}

/// `C,H,W` as one value (an array, not a `Vec`, which clap would read as a list of values).
fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let dims: Vec<usize> = s
        .split(',')
        .map(|d| d.trim().parse().map_err(|_| format!("`{s}` is not C,H,W")))
        .collect::<Result<_, _>>()?;
    match dims[..] {
        [c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        _ => Err(format!("`{s}` is not C,H,W with positive sizes")),
    }
}

fn summary(
    model: &str,
    input: Option<[usize; 3]>,
    classes: Option<usize>,
) -> forja_train::Result<()> {
    // Every dataset forja has so far holds 1x28x28 images of 10 classes.
    let input = input.unwrap_or([1, 28, 28]);
    let s = forja_train::summarize(model, &input, classes.unwrap_or(10))?;
    println!("{s}");
    Ok(())
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::List => list(),
        Command::Datasets { data_dir } => datasets(data_dir),
        Command::Train(args) => train(*args)?,
        Command::Summary {
            model,
            input,
            classes,
        } => summary(&model, input, classes)?,
        Command::Eval { run_dir, iwae_k } => eval(run_dir, iwae_k)?,
        Command::Fid {
            run_dir,
            classifier,
            samples,
        } => fid(run_dir, classifier, samples)?,
        Command::Bench(args) => bench::bench(args)?,
        Command::BenchOne {
            workload,
            steps,
            warmup,
            batch,
        } => bench::run_one(&workload, steps, warmup, batch)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    forja_train::runtime::tune_for_training();
    let result = run(Cli::parse().command);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_the_input_shape_as_one_value() {
        let cli =
            Cli::try_parse_from(["cargo xtask", "summary", "vgg11", "--input", "3,32,32"]).unwrap();
        match cli.command {
            Command::Summary { input, .. } => assert_eq!(input, Some([3, 32, 32])),
            _ => panic!("not the summary command"),
        }
        assert!(
            Cli::try_parse_from(["cargo xtask", "summary", "vgg11", "--input", "3,32"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["cargo xtask", "summary", "vgg11", "--input", "0,32,32"]).is_err()
        );
    }

    #[test]
    fn augmentation_flags_reach_the_run_config() {
        let cli = Cli::try_parse_from([
            "cargo xtask",
            "train",
            "resnet20",
            "--flip",
            "--crop",
            "4",
            "--rotate",
            "15",
            "--elastic",
            "8,6",
        ])
        .unwrap();
        let Command::Train(args) = cli.command else {
            panic!("not the train command");
        };
        assert_eq!(
            args.hyper.given(),
            ["--flip", "--crop", "--rotate", "--elastic"]
        );
        let mut cfg = RunConfig::new("resnet20", "synth-digits");
        args.hyper.apply(&mut cfg);
        assert_eq!(
            cfg.augment,
            forja_train::Augment {
                flip: true,
                crop_padding: 4,
                rotate_degrees: 15.0,
                elastic: Some([8.0, 6.0]),
            }
        );
        assert!(cfg.augment.transform().is_some());
        assert!(RunConfig::new("m", "d").augment.transform().is_none());
    }
}
