use std::time::Instant;
use webdistill::train::session::{STUDENT, Session};
use webdistill::train::{DistillConfig, TrainConfig};
use webdistill::{Context, checkpoint, data};

fn main() -> webdistill::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let student = a.get(1).cloned().unwrap_or("mixer_nano_p4".into());
    let teacher = a.get(2).cloned().unwrap_or("vit_nano_p4".into());
    let method = a.get(3).cloned().unwrap_or("ofa".into());
    let batch: usize = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(8);
    let ctx = Context::new()?;
    println!("{}", ctx.adapter);
    let splits = data::bundled()?;
    let base = TrainConfig { batch, train_limit: 512, test_limit: 64, eval_batch: 32, ..TrainConfig::recipe("quick")? };
    let t0 = Instant::now();
    let ts = Session::new(&ctx, TrainConfig { model: teacher.clone(), ..base.clone() }, &splits, None)?;
    let tw = checkpoint::parse(&pollster::block_on(ts.student_bytes(&Default::default()))?, "teacher")?;
    let _ = STUDENT;
    let cfg = TrainConfig { model: student, distill: Some(DistillConfig { method, teacher, ..Default::default() }), ..base };
    let mut s = Session::new(&ctx, cfg, &splits, Some(&tw))?;
    println!("build {:.1}s, {}", t0.elapsed().as_secs_f32(), s.train_stats());
    s.train_steps(1)?;
    let t = Instant::now();
    let m = s.parse_train_metrics(&s.request_train_metrics()?.wait(&ctx)?);
    println!("first step {:.1}s {:?}", t.elapsed().as_secs_f32(), m);
    let t = Instant::now();
    s.train_steps(5)?;
    let m = s.parse_train_metrics(&s.request_train_metrics()?.wait(&ctx)?);
    println!("5 steps {:.3}s/step {:?}", t.elapsed().as_secs_f32() / 5.0, m);
    Ok(())
}
