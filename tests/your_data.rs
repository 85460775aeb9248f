//! "Your own images" on the command line: an image folder with a held-out split by
//! `--val-split`, class names in the run (card.json and the student's metadata), the teacher
//! measured first when distilling, and `predict` on PNG files printing class names with the
//! logits the run's own evaluation saw.

use std::path::{Path, PathBuf};
use std::process::Command;
use webdistill::checkpoint;
use webdistill::train::ModelCard;

const CLASSES: [&str; 3] = ["ball", "bar", "box"];

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webdistill-yours-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Three classes of 10 PNGs each (a disc, a bar, a square at varying places and sizes), with
/// a stray text file that must be ignored.
fn folder(dir: &Path) {
    for (c, name) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..10u32 {
            let (w, h) = (20 + i, 24);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let (dx, dy) = (x as i32 - (w / 2) as i32, y as i32 - (h / 2) as i32 + (i as i32 % 3) - 1);
                let r = 5 + (i % 4) as i32;
                let on = match c {
                    0 => dx * dx + dy * dy <= r * r,
                    1 => dx.abs() <= 2 && dy.abs() <= r + 3,
                    _ => dx.abs() <= r && dy.abs() <= r,
                };
                if on { image::Rgb([230, 200 - 10 * i as u8, 40]) } else { image::Rgb([10, 20 + i as u8, 30]) }
            });
            img.save(dir.join(name).join(format!("{name}_{i:02}.png"))).unwrap();
        }
    }
    std::fs::write(dir.join(CLASSES[0]).join("README.txt"), "not an image").unwrap();
}

fn webdistill(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_webdistill")).args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn last_epoch(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    webdistill::data::npy::read_npy(path).unwrap()
}

#[test]
fn an_image_folder_trains_distils_and_predicts_with_class_names() {
    let root = tmpdir("cli");
    let data = root.join("shapes");
    folder(&data);
    let spec = format!("folder:{}", data.display());
    let teacher = root.join("teacher");
    let t = teacher.display().to_string();
    let (ok, _, err) = webdistill(&[
        "train",
        "--model",
        "resnet8",
        "--data",
        &spec,
        "--val-split",
        "0.2",
        "--img-size",
        "24",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--lr",
        "0.01",
        "--out",
        &t,
        "--quiet",
    ]);
    assert!(ok, "train failed: {err}");

    // The card: in card.json and in the student's metadata, with the folder's class names.
    let card = ModelCard::from_json(&std::fs::read_to_string(teacher.join("card.json")).unwrap(), "card.json").unwrap();
    assert_eq!(card.classes, CLASSES);
    assert_eq!((card.model.as_str(), card.channels, card.image_size, card.input_size), ("resnet8", 3, 24, 24));
    let bytes = std::fs::read(teacher.join("last.safetensors")).unwrap();
    let meta = checkpoint::metadata(&bytes, "last.safetensors").unwrap();
    assert_eq!(ModelCard::from_metadata(&meta, "last.safetensors").unwrap(), Some(card.clone()));
    let config = std::fs::read_to_string(teacher.join("config.toml")).unwrap();
    assert!(config.contains("val_split = 0.2"), "{config}");

    // predict on the held-out files (0.2: the 5th and 10th of each class by name) gives the
    // accuracy the run's own evaluation measured on them, and prints class names.
    let held: Vec<PathBuf> = CLASSES.iter().flat_map(|c| [4, 9].map(|i| data.join(c).join(format!("{c}_{i:02}.png")))).collect();
    let npy = root.join("held.npy");
    let mut args: Vec<String> = ["predict", "--weights"].map(String::from).to_vec();
    args.push(teacher.join("last.safetensors").display().to_string());
    args.push("--input".into());
    args.extend(held.iter().map(|p| p.display().to_string()));
    args.extend(["--out".to_string(), npy.display().to_string(), "--top".into(), "1".into()]);
    let (ok, out, err) = webdistill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "predict failed: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(".png\t")).collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines.iter().all(|l| CLASSES.iter().any(|c| l.split('\t').nth(1).unwrap().starts_with(c))), "{out}");
    let (shape, logits) = npy_f32(&npy);
    assert_eq!(shape, vec![6, 3]);
    let hits = logits
        .chunks(3)
        .enumerate()
        .filter(|(k, z)| {
            let best = (0..3).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap();
            best == k / 2
        })
        .count();
    let epoch = last_epoch(&teacher);
    let top1 = epoch["test_top1"].as_f64().unwrap();
    assert!((top1 - 100.0 * hits as f64 / 6.0).abs() < 1e-3, "predict: {hits}/6 right, the run's evaluation: {top1}%");

    // A whole folder works too (recursively, sorted), and prints one line per image.
    let (ok, out, err) = webdistill(&[
        "predict",
        "--weights",
        &teacher.join("best.safetensors").display().to_string(),
        "--input",
        &data.display().to_string(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 30, "{out}");

    // Distilling from it measures the teacher first: the same numbers its own last evaluation gave.
    let student = root.join("student");
    let (ok, _, err) = webdistill(&[
        "distill",
        "--student",
        "resnet8",
        "--teacher",
        "resnet8",
        "--teacher-weights",
        &teacher.join("last.safetensors").display().to_string(),
        "--method",
        "kd",
        "--data",
        &spec,
        "--val-split",
        "0.2",
        "--img-size",
        "24",
        "--epochs",
        "1",
        "--batch",
        "8",
        "--out",
        &student.display().to_string(),
        "--quiet",
    ]);
    assert!(ok, "distill failed: {err}");
    assert!(err.contains("teacher resnet8 on the 6 test images: top-1"), "{err}");
    let te: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(student.join("teacher_eval.json")).unwrap()).unwrap();
    assert_eq!(te["images"], 6);
    assert!((te["top1"].as_f64().unwrap() - top1).abs() < 1e-3, "teacher_eval {te} vs its run's {top1}");
    assert!((te["loss"].as_f64().unwrap() - epoch["test_loss"].as_f64().unwrap()).abs() < 1e-4, "{te} vs {epoch}");
    let card: ModelCard = ModelCard::from_json(&std::fs::read_to_string(student.join("card.json")).unwrap(), "card").unwrap();
    assert_eq!((card.method.as_deref(), card.teacher.as_deref()), (Some("kd"), Some("resnet8")));
}

#[test]
fn bad_images_and_weights_without_a_card_get_clear_errors() {
    let root = tmpdir("bad");
    let data = root.join("shapes");
    folder(&data);
    std::fs::write(data.join("bar").join("broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let spec = format!("folder:{}", data.display());
    let (ok, _, err) =
        webdistill(&["train", "--model", "resnet8", "--data", &spec, "--epochs", "1", "--out", &root.join("r").display().to_string()]);
    assert!(!ok);
    assert!(err.contains("bar/broken.png") && err.contains("could not be read"), "{err}");
    std::fs::remove_file(data.join("bar").join("broken.png")).unwrap();
    std::fs::create_dir_all(data.join("empty")).unwrap();
    let (ok, _, err) = webdistill(&["train", "--model", "resnet8", "--data", &spec, "--epochs", "1"]);
    assert!(!ok && err.contains("empty class folder"), "{err}");

    // The shipped teacher was saved by PyTorch: no card, so predict on a PNG asks for one.
    let png = data.join("ball").join("ball_00.png");
    let (ok, _, err) =
        webdistill(&["predict", "--weights", "assets/teacher/resnet20_fmnist.safetensors", "--input", &png.display().to_string()]);
    assert!(!ok && err.contains("has no webdistill card") && err.contains("--card"), "{err}");
    let (ok, _, err) = webdistill(&["predict", "--weights", "assets/teacher/resnet20_fmnist.safetensors", "--input", "README.md"]);
    assert!(!ok && err.contains("README.md: not a PNG/JPEG image"), "{err}");
}
