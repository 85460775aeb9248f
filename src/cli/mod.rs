//! The native command-line tool: a thin shell over the library.

pub mod main_job;
pub mod obow;
pub mod predict;
pub mod selftest;
pub mod train;

use crate::error::Result;
use crate::gpu::Context;
use crate::train::inference;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "webdistill", version, about = "Train and distil neural networks on any GPU through WebGPU")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report the GPU adapter, its limits and the kernel variants chosen for it.
    Info,
    /// Measure kernel throughput and dispatch cost on this adapter.
    Bench {
        /// matmul, conv, resnet20-step, dispatch, attention, vit-step, distill-step or all
        #[arg(default_value = "all")]
        what: String,
        /// Matrix sizes for the matmul benchmark: `--sizes 256 512 1024` or `--sizes 256,512,1024`.
        #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = vec![256usize, 512, 1024])]
        sizes: Vec<usize>,
    },
    /// Measure this adapter end to end into a folder (report.md, report.json, charts, runs):
    /// the adapter and its f32 peak, correctness of every kernel variant and of the model
    /// logits against the PyTorch goldens, benchmarks, PyTorch on the same step (when python3
    /// has torch), then a teacher, students by method and OBoW with the time left.
    Report {
        /// Folder for report.md, report.json, the charts and the runs.
        #[arg(long)]
        out: PathBuf,
        /// Time for the whole report; the runs are scaled to fit.
        #[arg(long, default_value_t = 9.0)]
        minutes: f64,
        /// Every section at tiny sizes (a few minutes on a software adapter): checks the
        /// report itself, not the adapter.
        #[arg(long)]
        smoke: bool,
        /// Training data (default: fashion-mnist where installed, else the bundled subset;
        /// --smoke: the bundled subset).
        #[arg(long)]
        data: Option<String>,
        /// The repository (goldens, scripts, the shipped teacher).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Python with torch for the PyTorch section.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Run the fixed self-test plan (the browser tests compare the page's results with it), or
    /// with --bench time one of the demo page's training sessions on this adapter.
    Selftest {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Time a training session instead (steps/s, images/s).
        #[arg(long)]
        bench: bool,
        /// The session kind --bench times (mlp, distill).
        #[arg(long, default_value = "mlp")]
        kind: String,
        /// Files the session gets as assets, as NAME=PATH (e.g. teacher=resnet20.safetensors).
        #[arg(long, value_name = "NAME=PATH")]
        asset: Vec<String>,
        /// Timed training steps for --bench (after one warm-up step).
        #[arg(long, default_value_t = 60)]
        steps: usize,
        /// Steps per `step(n)` call for --bench (each call awaits its loss, as the page does).
        #[arg(long, default_value_t = 5)]
        chunk: usize,
        /// Settings of the session for --bench, as JSON (e.g. '{"hidden":128}').
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// List the models: parameters, FLOPs per image, stage feature shapes.
    Models,
    /// Train a model from scratch (evaluates every epoch; checkpoints, config and metrics in --out).
    Train {
        #[arg(long, default_value = "")]
        model: String,
        #[command(flatten)]
        run: train::RunArgs,
    },
    /// Distil a teacher into a student (OFA-KD and baselines).
    Distill {
        #[arg(long, default_value = "")]
        student: String,
        #[command(flatten)]
        distill: train::DistillArgs,
        #[command(flatten)]
        run: train::RunArgs,
    },
    /// Self-supervised OBoW pre-training (EMA teacher, online vocabularies, BoW targets, all in
    /// one compiled step); the student backbone (DIR/last.safetensors) loads in predict,
    /// train --init and distill. Defaults: the `obow` recipe.
    Obow {
        #[arg(long, default_value = "resnet20")]
        model: String,
        #[command(flatten)]
        obow: obow::ObowArgs,
        #[command(flatten)]
        run: train::RunArgs,
    },
    /// Linear-probe accuracy of a frozen backbone: pooled features computed once on the GPU,
    /// a linear classifier trained on the standardised train features, test top-1/top-5.
    Probe {
        #[command(flatten)]
        features: obow::FeatureArgs,
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// SGD (momentum 0.9) learning rate, cosine to 0.
        #[arg(long, default_value_t = 0.1)]
        lr: f32,
        #[arg(long = "wd", default_value_t = 0.0)]
        weight_decay: f32,
    },
    /// N-way K-shot prototype accuracy (cosine to class means of L2-normalised features) of a
    /// frozen backbone over random episodes of the test set.
    Fewshot {
        #[command(flatten)]
        features: obow::FeatureArgs,
        #[arg(long, default_value_t = 5)]
        ways: usize,
        /// Shots per class (one result each).
        #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 5])]
        shots: Vec<usize>,
        /// Queries per class and episode.
        #[arg(long, default_value_t = 15)]
        queries: usize,
        #[arg(long, default_value_t = 1000)]
        episodes: usize,
    },
    /// A PNG grid of the test-set image patches nearest to a sample of an OBoW run's visual
    /// words (one row per word).
    ObowWords {
        /// The run directory (or its state.safetensors; config.toml must be beside it).
        #[arg(long)]
        weights: PathBuf,
        /// Data to search (default: the run's).
        #[arg(long)]
        data: Option<String>,
        #[arg(long, default_value = "obow_words.png")]
        out: PathBuf,
        /// BoW level (1-based; default: the last).
        #[arg(long)]
        level: Option<usize>,
        /// Words to show.
        #[arg(long, default_value_t = 12)]
        words: usize,
        /// Patches per word.
        #[arg(long, default_value_t = 8)]
        per_word: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Search only the first N test images (0: all).
        #[arg(long, default_value_t = 0)]
        test_limit: usize,
    },
    /// Linear CKA between every teacher stage and every student stage (JSON + PNG heatmap).
    Cka {
        #[arg(long)]
        teacher: String,
        #[arg(long)]
        teacher_weights: PathBuf,
        #[arg(long)]
        student: String,
        #[arg(long)]
        student_weights: PathBuf,
        #[arg(long, default_value = "bundled")]
        data: String,
        /// Input side the model was trained at (0: the data's own size).
        #[arg(long, default_value_t = 0)]
        img_size: usize,
        /// Test images to compare on.
        #[arg(long, default_value_t = 256)]
        images: usize,
        /// Folder for cka.json and cka.png.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// The main job, which `webdistill` with no arguments runs: OFA-KD of the shipped teacher
    /// into a small student vs the same student without distillation, on the bundled data.
    MainJob {
        /// Seed of both arms (data order, augmentation, initial weights).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where each arm's run folder goes (<out>/none, <out>/ofa).
        #[arg(long, default_value = "runs/main-job")]
        out: PathBuf,
        /// The budget: software or gpu (default: by the adapter).
        #[arg(long)]
        budget: Option<String>,
    },
    /// Top-1/top-5 accuracy and loss of a checkpoint on a dataset's test split.
    Eval {
        #[arg(long)]
        model: String,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long, default_value = "bundled")]
        data: String,
        /// Input side the model was trained at (0: the data's own size).
        #[arg(long, default_value_t = 0)]
        img_size: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Eval-mode predictions of a model: for PNG/JPEG images (files or folders; prepared as
    /// the weights' card says, printing each image's classes), or logits for a float32
    /// [N, C, H, W] .npy batch.
    Predict {
        /// Architecture (default: the one the weights' card names).
        #[arg(long)]
        model: Option<String>,
        /// Weights (.safetensors, PyTorch state-dict names).
        #[arg(long)]
        weights: PathBuf,
        /// Images (.png, .jpg), folders of them, or one float32 .npy of shape [N, C, H, W].
        #[arg(long, num_args = 1.., required = true)]
        input: Vec<PathBuf>,
        /// Where to write float32 logits [N, classes] as .npy (required for a .npy input).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A card JSON (class names, input size, normalisation) for weights that carry none,
        /// such as a PyTorch state dict.
        #[arg(long)]
        card: Option<PathBuf>,
        /// Classes printed per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Images per GPU batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
}

pub fn info(ctx: &Context) {
    println!("adapter: {}", ctx.adapter);
    let l = &ctx.limits;
    println!(
        "limits: storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} storage buffers/stage",
        l.max_storage_buffer_binding_size >> 20,
        l.max_buffer_size >> 20,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_compute_invocations_per_workgroup,
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "kernels: {} profile, matmul {}, serial rows up to {}, subgroup reductions {}, wide-tile K step {}, linear-backward split-K {}",
        if ctx.profile.software { "software" } else { "gpu" },
        ctx.profile.matmul.name(),
        ctx.profile.serial_row_max,
        if ctx.profile.subgroups { "on" } else { "off" },
        ctx.profile.wide_bk,
        if ctx.profile.splits_k() { "on" } else { "off" }
    );
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Models) = cli.command {
        return predict::list_models();
    }
    // Every other command runs on the GPU (the main job too).
    let ctx = Context::new()?;
    match cli.command {
        Some(Command::Info) => {
            info(&ctx);
        }
        Some(Command::Bench { what, sizes }) => {
            crate::bench::run(&ctx, &what, &sizes)?;
        }
        Some(Command::Report { out, minutes, smoke, data, repo, python }) => {
            let data = data.unwrap_or_else(|| {
                let installed = std::path::Path::new(crate::data::spec::FASHION_MNIST_DIR).is_dir();
                if installed && !smoke { "fashion-mnist".into() } else { "bundled".into() }
            });
            let bin = std::env::current_exe().map_err(|e| crate::error::Error::usage(format!("cannot find this binary: {e}")))?;
            let minutes = if smoke { minutes.min(3.0) } else { minutes };
            crate::report::run(&ctx, crate::report::Options { out, minutes, smoke, data, repo, bin, python })?;
        }
        Some(Command::Selftest { json, bench, kind, asset, steps, chunk, config }) => {
            if bench {
                selftest::bench(&ctx, &kind, &asset, steps, chunk, &config, json)?;
            } else {
                selftest::selftest(&ctx, json)?;
            }
        }
        Some(Command::Models) => unreachable!("handled above"),
        Some(Command::Train { model, run }) => {
            train::train_cmd(&ctx, &model, None, &run)?;
        }
        Some(Command::Distill { student, distill, run }) => {
            train::train_cmd(&ctx, &student, Some(&distill), &run)?;
        }
        Some(Command::Obow { model, obow, run }) => {
            obow::obow_cmd(&ctx, &model, &obow, &run)?;
        }
        Some(Command::Probe { features, epochs, batch, lr, weight_decay }) => {
            let cfg = crate::train::probe::ProbeConfig { epochs, batch, lr, weight_decay, seed: features.seed };
            obow::probe_cmd(&ctx, &features, &cfg)?;
        }
        Some(Command::Fewshot { features, ways, shots, queries, episodes }) => {
            let cfg = crate::train::probe::FewShotConfig { ways, shots: 1, queries, episodes, seed: features.seed };
            obow::fewshot_cmd(&ctx, &features, &shots, &cfg)?;
        }
        Some(Command::ObowWords { weights, data, out, level, words, per_word, seed, test_limit }) => {
            let req = crate::train::words::WordRequest { level, words, per_word, seed };
            obow::words_cmd(&ctx, &weights, data.as_deref(), &out, &req, test_limit)?;
        }
        Some(Command::Cka { teacher, teacher_weights, student, student_weights, data, img_size, images, out }) => {
            let pair = inference::CkaPair {
                teacher: &teacher,
                teacher_weights: &teacher_weights,
                student: &student,
                student_weights: &student_weights,
            };
            let r = inference::cka(&ctx, &pair, &data, img_size, images, &out)?;
            println!("linear CKA on {} test images ({} stages x {} stages) | adapter: {}", r.images, teacher, student, ctx.adapter);
            println!("{r}");
            println!("wrote {} and {}", out.join("cka.json").display(), out.join("cka.png").display());
        }
        Some(Command::Eval { model, weights, data, img_size, batch }) => {
            let r = inference::eval(&ctx, &model, &weights, &data, img_size, batch)?;
            println!(
                "{model} on {data}: top-1 {:.2}%, top-5 {:.2}%, loss {:.4} ({} images) | adapter: {}",
                r.top1, r.top5, r.loss, r.images, ctx.adapter
            );
        }
        Some(Command::Predict { model, weights, input, out, card, top, batch }) => {
            predict::predict_cmd(&ctx, model.as_deref(), &weights, &input, out.as_deref(), card.as_deref(), top, batch)?;
        }
        Some(Command::MainJob { seed, out, budget }) => {
            main_job::main_job(&ctx, seed, &out, budget.as_deref())?;
        }
        None => {
            main_job::main_job(&ctx, 0, std::path::Path::new("runs/main-job"), None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("webdistill").chain(args.iter().copied())).unwrap().command.unwrap()
    }

    #[test]
    fn bench_sizes_take_both_the_space_and_the_comma_form() {
        for args in [&["bench", "matmul", "--sizes", "256", "512", "1024"][..], &["bench", "matmul", "--sizes", "256,512,1024"]] {
            let Command::Bench { what, sizes } = parse(args) else { panic!("not bench") };
            assert_eq!((what.as_str(), sizes), ("matmul", vec![256, 512, 1024]));
        }
    }

    #[test]
    fn the_main_job_subcommand_takes_a_seed_and_a_budget() {
        let Command::MainJob { seed, budget, .. } = parse(&["main-job", "--seed", "1", "--budget", "software"]) else { panic!() };
        assert_eq!((seed, budget.as_deref()), (1, Some("software")));
        assert!(crate::train::main_job::Budget::named("fast").is_err());
    }
}
