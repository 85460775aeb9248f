//! Distil a network inside a render loop, on the host's own device and queue, and watch it.
//!
//!     cargo run --release --features window --example embed_render -- [options]   # a window
//!     cargo run --release --example embed_render -- --headless --frames 30 --out docs/embed_render.png
//!     cargo run --release --example embed_render -- --bench --frames 20
//!
//! Every frame records a bounded number of OFA distillation steps (mixer_nano_p4 student,
//! vit_nano_p4 teacher by default, bundled Fashion-MNIST) into the frame's command encoder,
//! then webdistill's texture writers draw the live loss curve (a GPU ring, no readback), the
//! logits of the first image (bars), the teacher/student CKA matrix (every 10th frame a CKA
//! pass on 32 test images is recorded too) and the student's stage
//! features (one tile per channel) into a canvas texture, which a render pass draws to the
//! window. The library owns no event loop and never blocks: winit's loop belongs to this host.
//! It prints the frame rate and the training steps per second every second. The window needs
//! the `window` feature (winit); headless rendering and the bench do not.
//!
//! Options: --student NAME --teacher NAME --method ofa|kd|...|none --teacher-weights FILE
//! --teacher-steps N --batch N --steps-per-frame N --budget-ms MS --no-train --cka-every N (0: off) --frames N
//! (window: until closed) --width W --height H --seed N --no-vsync; --headless renders N frames offscreen and writes
//! --out (PNG); --bench measures, offscreen, the frame rate with and without training and the
//! steps/s of training alone.

mod scene;

#[cfg(feature = "window")]
mod window;

use scene::Options;
use webdistill::{Error, Result};

fn parse() -> Result<(Options, Mode, bool)> {
    let mut o = Options::default();
    let mut mode = Mode::Window;
    let mut vsync = true;
    let mut frames_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| Error::usage(format!("{a} needs a value")));
        let num = |s: String| s.parse::<f64>().map_err(|_| Error::usage(format!("{a}: '{s}' is not a number")));
        match a.as_str() {
            "--headless" => mode = Mode::Headless,
            "--bench" => mode = Mode::Bench,
            "--no-train" => o.train = false,
            "--cka-every" => o.cka_every = num(val()?)? as usize,
            "--no-vsync" => vsync = false,
            "--student" => o.student = val()?,
            "--teacher" => o.teacher = val()?,
            "--method" => o.method = val()?,
            "--teacher-weights" => o.teacher_weights = Some(val()?.into()),
            "--teacher-steps" => o.teacher_steps = num(val()?)? as usize,
            "--batch" => o.batch = num(val()?)? as usize,
            "--steps-per-frame" => o.steps_per_frame = num(val()?)? as usize,
            "--budget-ms" => o.budget_ms = Some(num(val()?)?),
            "--frames" => {
                o.frames = num(val()?)? as usize;
                frames_given = true;
            }
            "--warmup-frames" => o.warmup_frames = num(val()?)? as usize,
            "--width" => o.width = num(val()?)? as u32,
            "--height" => o.height = num(val()?)? as u32,
            "--seed" => o.seed = num(val()?)? as u64,
            "--out" => o.out = Some(val()?.into()),
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("main.rs")
                        .lines()
                        .take_while(|l| l.starts_with("//!"))
                        .map(|l| &l[3.min(l.len())..])
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            _ => return Err(Error::usage(format!("unknown argument {a} (see --help)"))),
        }
    }
    if mode == Mode::Window && !frames_given {
        o.frames = 0; // until the window is closed
    }
    Ok((o, mode, vsync))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Window,
    Headless,
    Bench,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (mut o, mode, vsync) = parse()?;
    match mode {
        Mode::Headless => {
            if o.out.is_none() {
                o.out = Some("embed_render.png".into());
            }
            let r = scene::run_headless(&o)?;
            println!("adapter: {}", r.adapter);
            println!("{r}");
            println!("loss per frame (GPU ring): {:?}", r.history.iter().map(|l| format!("{l:.3}")).collect::<Vec<_>>());
            println!("wrote {}", o.out.as_ref().unwrap().display());
        }
        Mode::Bench => {
            let with = scene::run_headless(&o)?;
            println!("adapter: {}", with.adapter);
            println!("rendering + training ({:?} per frame): {with}", o.budget());
            let without = scene::run_headless(&Options { train: false, out: None, ..o.clone() })?;
            println!("rendering only:                 {without}");
            let alone = scene::run_training_only(&o)?;
            println!("training only (no rendering):   {alone}");
            println!(
                "sharing: {:.1}% of the render-only frame rate, {:.1}% of training-alone steps/s",
                100.0 * with.fps / without.fps,
                100.0 * with.steps_per_s / alone.steps_per_s
            );
        }
        #[cfg(feature = "window")]
        Mode::Window => window::run(o, vsync)?,
        #[cfg(not(feature = "window"))]
        Mode::Window => {
            let _ = vsync;
            return Err(Error::usage("this build has no window: run with --headless (or --bench), or build with `--features window`"));
        }
    }
    Ok(())
}
