//! The native command-line tool: a thin shell over the library.

pub mod bench;
pub mod predict;

use crate::error::Result;
use crate::gpu::Context;
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
        /// matmul, conv, resnet20-step, dispatch or all
        #[arg(default_value = "all")]
        what: String,
        /// Matrix sizes for the matmul benchmark.
        #[arg(long, value_delimiter = ',', default_values_t = vec![256usize, 512, 1024])]
        sizes: Vec<usize>,
    },
    /// List the models: parameters, FLOPs per image, stage feature shapes.
    Models,
    /// Eval-mode logits of a model for a float32 [N, C, H, W] .npy batch.
    Predict {
        #[arg(long)]
        model: String,
        /// Weights (.safetensors, PyTorch state-dict names).
        #[arg(long)]
        weights: PathBuf,
        /// float32 .npy of shape [N, C, H, W] (C order).
        #[arg(long)]
        input: PathBuf,
        /// Where to write float32 logits [N, classes] as .npy.
        #[arg(long)]
        out: PathBuf,
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
        l.max_storage_buffer_binding_size as u64 >> 20,
        l.max_buffer_size >> 20,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_compute_invocations_per_workgroup,
        l.max_storage_buffers_per_shader_stage
    );
    println!("kernels: matmul {}, serial rows up to {}", ctx.profile.matmul.name(), ctx.profile.serial_row_max);
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Info) => {
            let ctx = Context::new()?;
            info(&ctx);
        }
        Some(Command::Bench { what, sizes }) => {
            let ctx = Context::new()?;
            bench::run(&ctx, &what, &sizes)?;
        }
        Some(Command::Models) => predict::list_models()?,
        Some(Command::Predict { model, weights, input, out, batch }) => {
            let (shape, x) = predict::read_npy(&input)?;
            let ctx = Context::new()?;
            let (oshape, logits) = predict::predict(&ctx, &model, &weights, &shape, &x, batch)?;
            predict::write_npy(&out, &oshape, &logits)?;
            println!("wrote {} logits {:?} to {}", model, oshape, out.display());
        }
        None => {
            let ctx = Context::new()?;
            info(&ctx);
        }
    }
    Ok(())
}
