//! Data: file parsers (good, truncated, malformed files written here), the bundled subset, and
//! every GPU data kernel against its Rust twin drawing the same random numbers.

mod common;

use common::{assert_close, ctx};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use webdistill::data::{self, Augment, Blur, Crop, DataSpec, Dataset, GpuData, Jitter, LoadOptions, Mix, MultiCropSpec, Patches, formats};
use webdistill::graph::{CpuTensor, DType, Graph, Plan, Var};
use webdistill::ops::data::{REC, Sampling, rng};
use webdistill::{Error, Store};

// ---- helpers ----------------------------------------------------------------------------

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webdistill-data-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn file_err(r: Result<impl std::fmt::Debug, Error>, needle: &str) -> String {
    match r {
        Err(e @ Error::File { .. }) | Err(e @ Error::BadInput { .. }) => {
            let s = e.to_string();
            assert!(s.contains(needle), "error '{s}' should mention '{needle}'");
            s
        }
        other => panic!("expected a file error mentioning '{needle}', got {other:?}"),
    }
}

/// Deterministic bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (rng::pcg_hash(i ^ seed.wrapping_mul(0x9E37_79B9)) >> 24) as u8).collect()
}

fn toy(n: usize, c: usize, h: usize, w: usize, classes: usize) -> Dataset {
    let labels = (0..n).map(|i| rng::pcg_hash(i as u32 + 77) % classes as u32).collect();
    Dataset::new("toy", bytes(n * c * h * w, 5), labels, c, h, w, (0..classes).map(|k| format!("c{k}")).collect()).unwrap()
}

/// Run `g` once per step (a counter ticks at the end), reading `reads` after each step.
struct Runner {
    plan: Plan,
}

impl Runner {
    fn new(g: &Graph, store: &mut Store) -> Runner {
        Runner { plan: Plan::compile(&ctx(), g, store, "data-test").unwrap() }
    }
    fn step(&self, reads: &[Var]) -> Vec<Vec<f32>> {
        self.plan.step().unwrap();
        reads.iter().map(|&v| self.plan.read(v).unwrap()).collect()
    }
    fn step_u32(&self, v: Var) -> Vec<u32> {
        self.plan.read_u32(v).unwrap()
    }
}

/// Evaluate one op on the CPU on given inputs (its Rust twin), isolating it from upstream ops.
fn cpu_op(inputs: &[(&[usize], DType, Vec<f64>)], build: impl Fn(&mut Graph, &[Var]) -> Var) -> Vec<f64> {
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs
        .iter()
        .enumerate()
        .map(|(i, (s, dt, _))| match dt {
            DType::F32 => g.input(&format!("x{i}"), s).unwrap(),
            DType::U32 => g.input_u32(&format!("x{i}"), s).unwrap(),
        })
        .collect();
    let y = build(&mut g, &vars);
    let feeds: HashMap<Var, CpuTensor> = vars.iter().zip(inputs).map(|(&v, (s, _, d))| (v, CpuTensor::new(s, d.clone()))).collect();
    g.eval_cpu(&feeds).unwrap()[&y].data.clone()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn u64s(v: &[u32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Feeds for the dataset state tensors of `data` (for whole-graph CPU evaluation).
fn data_feeds(g: &mut Graph, data: &GpuData, ds: &Dataset, step: Var, step_value: u32) -> HashMap<Var, CpuTensor> {
    let mut f = HashMap::new();
    let img = ds.image_bytes();
    for (p, page) in data.pages.iter().enumerate() {
        let v = g.state(page);
        let mut words = vec![0f64; page.numel()];
        for k in 0..page.numel() / data.stride {
            let i = p * data.per_page + k;
            for (wi, q) in ds.images[i * img..(i + 1) * img].chunks(4).enumerate() {
                let mut b = [0u8; 4];
                b[..q.len()].copy_from_slice(q);
                words[k * data.stride + wi] = u32::from_le_bytes(b) as f64;
            }
        }
        f.insert(v, CpuTensor::new(&[page.numel()], words));
    }
    let l = g.state(&data.labels);
    f.insert(l, CpuTensor::new(&[ds.n], ds.labels.iter().map(|&x| x as f64).collect()));
    f.insert(step, CpuTensor::new(&[1], vec![step_value as f64]));
    f
}

// ---- parsers ----------------------------------------------------------------------------

#[test]
fn idx_parsers_accept_good_files_and_name_bad_ones() {
    let px = bytes(3 * 4 * 5, 1);
    let good = idx(0x803, &[3, 4, 5], &px);
    for b in [good.clone(), gz(&good)] {
        let (n, h, w, data) = formats::parse_idx_images(&b, "imgs").unwrap();
        assert_eq!((n, h, w), (3, 4, 5));
        assert_eq!(data, px);
    }
    let labels = idx(0x801, &[3], &[0, 9, 4]);
    assert_eq!(formats::parse_idx_labels(&gz(&labels), "labs").unwrap(), vec![0, 9, 4]);

    file_err(formats::parse_idx_images(&good[..good.len() - 1], "imgs"), "truncated");
    file_err(formats::parse_idx_images(&good[..10], "imgs"), "truncated IDX header");
    file_err(formats::parse_idx_images(&good[..2], "imgs"), "truncated");
    let gzd = gz(&good);
    file_err(formats::parse_idx_images(&gzd[..gzd.len() / 2], "imgs.gz"), "truncated or corrupt gzip");
    let e = file_err(formats::parse_idx_images(&idx(0x801, &[3], &[1, 2, 3]), "imgs"), "wrong magic number 0x00000801");
    assert!(e.starts_with("imgs:"), "the error names the file: {e}");
    file_err(formats::parse_idx_labels(&good, "labs"), "wrong magic number 0x00000803");
    let mut long = good.clone();
    long.push(0);
    file_err(formats::parse_idx_images(&long, "imgs"), "unexpected bytes");
    file_err(formats::parse_idx_images(&idx(0x803, &[0, 4, 5], &[]), "imgs"), "zero");

    let names = &formats::MNIST_CLASSES;
    let ds = formats::idx_dataset("t", (&good, "imgs"), (&labels, "labs"), names).unwrap();
    assert_eq!((ds.n, ds.c, ds.h, ds.w, ds.classes), (3, 1, 4, 5, 10));
    let two = idx(0x801, &[2], &[0, 1]);
    file_err(formats::idx_dataset("t", (&good, "imgs"), (&two, "labs"), names), "2 labels, but imgs has 3 images");
    let bad_label = idx(0x801, &[3], &[0, 10, 1]);
    file_err(
        formats::idx_dataset("t", (&good, "imgs"), (&bad_label, "labs"), names),
        "label 10 of record 1 is out of range for 10 classes",
    );
}

#[test]
fn idx_directories_load_through_data_specs() {
    let d = tmpdir("idx");
    let (tr, te) = (bytes(6 * 28 * 28, 2), bytes(2 * 28 * 28, 3));
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), gz(&idx(0x803, &[6, 28, 28], &tr))).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(0x801, &[6], &[1, 2, 3, 4, 5, 6])).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(0x803, &[2, 28, 28], &te)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), gz(&idx(0x801, &[2], &[7, 8]))).unwrap();
    let spec: DataSpec = format!("mnist:{}", d.display()).parse().unwrap();
    let s = spec.load(&LoadOptions::default()).unwrap();
    assert_eq!((s.train.n, s.test.n, s.train.classes), (6, 2, 10));
    assert_eq!(s.train.images, tr);
    assert_eq!(s.test.labels, vec![7, 8]);
    let s2 = DataSpec::FashionMnist(Some(d.clone())).load(&LoadOptions::default()).unwrap();
    assert_eq!(s2.train.class_names[9], "Ankle boot");
    // Count mismatch across files, and a missing file, name the files.
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), gz(&idx(0x801, &[3], &[7, 8, 9]))).unwrap();
    file_err(spec.load(&LoadOptions::default()), "3 labels, but");
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    file_err(spec.load(&LoadOptions::default()), "t10k-labels-idx1-ubyte.gz: missing");
    file_err(DataSpec::Mnist(d.join("nope")).load(&LoadOptions::default()), "not a directory");
}

fn cifar_record(labels: &[u8], seed: u32) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend(bytes(3072, seed));
    r
}

#[test]
fn cifar10_binary_batches() {
    let root = tmpdir("cifar10");
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut want_first = Vec::new();
    for i in 1..=5u8 {
        let mut f = cifar_record(&[i], i as u32);
        f.extend(cifar_record(&[9], 100 + i as u32));
        if i == 1 {
            want_first = f[1..3073].to_vec();
        }
        std::fs::write(d.join(format!("data_batch_{i}.bin")), f).unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), [cifar_record(&[0], 50), cifar_record(&[3], 51), cifar_record(&[8], 52)].concat()).unwrap();
    let s = DataSpec::Cifar10(root.clone()).load(&LoadOptions::default()).unwrap();
    assert_eq!((s.train.n, s.test.n, s.train.c, s.train.h, s.train.w, s.train.classes), (10, 3, 3, 32, 32, 10));
    assert_eq!(s.train.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    assert_eq!(s.train.image(0), &want_first[..], "records are CHW pixels after the label byte");
    assert_eq!(s.test.labels, vec![0, 3, 8]);
    assert_eq!(s.train.class_names[0], "airplane");

    let one = cifar_record(&[1], 9);
    file_err(formats::parse_cifar10(&one[..3000], "b.bin"), "not a whole number of 3073-byte CIFAR-10 records");
    file_err(formats::parse_cifar10(&[], "b.bin"), "empty file");
    file_err(formats::parse_cifar10(&cifar_record(&[10], 1), "b.bin"), "label 10 of record 0 is out of range for 10 classes");
    std::fs::write(d.join("data_batch_3.bin"), &one[..100]).unwrap();
    file_err(DataSpec::Cifar10(root.clone()).load(&LoadOptions::default()), "data_batch_3.bin: truncated");
    std::fs::remove_file(d.join("data_batch_4.bin")).unwrap();
    std::fs::write(d.join("data_batch_3.bin"), &one).unwrap();
    file_err(DataSpec::Cifar10(root).load(&LoadOptions::default()), "data_batch_4.bin: missing");
}

#[test]
fn cifar100_binary_fine_and_coarse() {
    let d = tmpdir("cifar100");
    std::fs::write(d.join("train.bin"), [cifar_record(&[3, 77], 1), cifar_record(&[19, 99], 2)].concat()).unwrap();
    std::fs::write(d.join("test.bin"), cifar_record(&[0, 5], 3)).unwrap();
    let fine: DataSpec = format!("cifar100:{}", d.display()).parse().unwrap();
    let s = fine.load(&LoadOptions::default()).unwrap();
    assert_eq!((s.train.n, s.test.n, s.train.classes), (2, 1, 100));
    assert_eq!(s.train.labels, vec![77, 99]);
    assert_eq!(s.train.class_names[99], "worm");
    assert_eq!(s.train.image(1), &bytes(3072, 2)[..]);
    let coarse: DataSpec = format!("cifar100-coarse:{}", d.display()).parse().unwrap();
    let s = coarse.load(&LoadOptions::default()).unwrap();
    assert_eq!((s.train.classes, s.train.labels.clone()), (20, vec![3, 19]));
    assert_eq!(s.train.class_names[19], "vehicles_2");
    let rec = cifar_record(&[0, 0], 1);
    file_err(formats::parse_cifar100(&rec[..3073], "train.bin", false), "3074-byte CIFAR-100 records");
    file_err(formats::parse_cifar100(&cifar_record(&[20, 0], 1), "train.bin", true), "label 20 of record 0 is out of range for 20 classes");
    file_err(formats::parse_cifar100(&cifar_record(&[0, 100], 1), "train.bin", false), "out of range for 100 classes");
    std::fs::remove_file(d.join("test.bin")).unwrap();
    file_err(fine.load(&LoadOptions::default()), "test.bin");
}

fn png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn image_folders_of_png_and_jpeg() {
    let d = tmpdir("folder");
    for (split, n) in [("train", 3), ("val", 1)] {
        for (c, col) in [("cat", [200u8, 10, 40]), ("dog", [0u8, 128, 255])] {
            let cd = d.join(split).join(c);
            std::fs::create_dir_all(&cd).unwrap();
            for i in 0..n {
                png(&cd.join(format!("{i}.png")), 8 + i, 6, col);
            }
        }
    }
    image::GrayImage::from_pixel(5, 7, image::Luma([90])).save(d.join("train/dog/x.jpg")).unwrap();
    std::fs::write(d.join("train/dog/notes.txt"), "ignored").unwrap();
    let spec: DataSpec = format!("folder:{}", d.display()).parse().unwrap();
    let s = spec.load(&LoadOptions { size: 4, channels: 3, val_split: 0.1 }).unwrap();
    assert_eq!((s.train.n, s.test.n, s.train.c, s.train.h, s.train.w), (7, 2, 3, 4, 4));
    assert_eq!(s.train.class_names, vec!["cat", "dog"]);
    assert_eq!(s.train.labels, vec![0, 0, 0, 1, 1, 1, 1]);
    // A constant image stays constant through resize and crop; CHW layout.
    let img = s.train.image(0);
    assert!(img[..16].iter().all(|&v| v == 200) && img[16..32].iter().all(|&v| v == 10) && img[32..].iter().all(|&v| v == 40));
    let jpeg = s.train.image(6);
    assert!(jpeg.iter().all(|&v| (v as i32 - 90).abs() <= 2), "grey JPEG decoded to RGB: {jpeg:?}");
    let g = spec.load(&LoadOptions { size: 3, channels: 1, val_split: 0.1 }).unwrap();
    assert_eq!((g.train.c, g.train.image(6).len()), (1, 9));

    // Flat layout: every 10th image of a class is held out.
    let flat = tmpdir("folder-flat");
    for c in ["a", "b"] {
        std::fs::create_dir_all(flat.join(c)).unwrap();
        for i in 0..12 {
            png(&flat.join(c).join(format!("{i:02}.png")), 3, 3, [i as u8, 0, 0]);
        }
    }
    let s = DataSpec::Folder(flat.clone()).load(&LoadOptions { size: 3, channels: 3, val_split: 0.1 }).unwrap();
    assert_eq!((s.train.n, s.test.n), (22, 2));
    assert_eq!(s.test.image(0)[0], 9, "the 10th file (09.png) is held out");

    std::fs::create_dir_all(flat.join("empty")).unwrap();
    file_err(DataSpec::Folder(flat.clone()).load(&LoadOptions::default()), "empty class folder");
    std::fs::remove_dir(flat.join("empty")).unwrap();
    std::fs::write(flat.join("a/05.png"), b"not a png").unwrap();
    file_err(DataSpec::Folder(flat.clone()).load(&LoadOptions::default()), "05.png: cannot decode image");
    let none = tmpdir("folder-none");
    file_err(DataSpec::Folder(none).load(&LoadOptions::default()), "no images");
}

#[test]
fn data_spec_strings() {
    let cases = [
        ("bundled", DataSpec::Bundled),
        ("", DataSpec::Bundled),
        ("fashion-mnist", DataSpec::FashionMnist(None)),
        ("fashion-mnist:/x/y", DataSpec::FashionMnist(Some("/x/y".into()))),
        ("mnist:/m", DataSpec::Mnist("/m".into())),
        ("cifar10:/c", DataSpec::Cifar10("/c".into())),
        ("cifar100:/c", DataSpec::Cifar100 { dir: "/c".into(), coarse: false }),
        ("cifar100-coarse:/c", DataSpec::Cifar100 { dir: "/c".into(), coarse: true }),
        ("folder:/f:g", DataSpec::Folder("/f:g".into())),
    ];
    for (s, want) in cases {
        let got: DataSpec = s.parse().unwrap();
        assert_eq!(got, want, "{s}");
        assert_eq!(got.to_string().parse::<DataSpec>().unwrap(), want, "round trip of {s}");
    }
    for bad in ["mnist", "cifar100:", "imagenet:/x", "folder"] {
        let e = bad.parse::<DataSpec>().unwrap_err().to_string();
        assert!(e.contains("--data") && e.contains(bad), "{e}");
    }
}

#[test]
fn bundled_subset_has_the_right_counts() {
    let s = data::bundled().unwrap();
    assert_eq!((s.train.n, s.train.c, s.train.h, s.train.w, s.train.classes), (5000, 1, 28, 28, 10));
    assert_eq!(s.test.n, 1000);
    assert_eq!(s.train.class_counts(), vec![500; 10]);
    assert_eq!(s.test.class_counts(), vec![100; 10]);
    assert_eq!(s.train.class_names[0], "T-shirt/top");
    let (m, sd) = s.train.mean_std();
    assert!((m[0] - 0.286).abs() < 0.02 && (sd[0] - 0.353).abs() < 0.02, "mean {m:?} std {sd:?}");
    assert_eq!(DataSpec::Bundled.load(&LoadOptions::default()).unwrap(), s);
}

#[test]
fn bundled_subset_from_its_files_as_the_page_passes_them() {
    use webdistill::session::{Assets, bundled_data};
    let files: Vec<Vec<u8>> =
        data::BUNDLED_FILES.iter().map(|f| std::fs::read(format!("data/fashion-mnist-subset/{f}")).unwrap()).collect();
    let s = data::bundled().unwrap();
    assert_eq!(data::bundled_from([&files[0], &files[1], &files[2], &files[3]]).unwrap(), s);
    let mut assets: Assets = data::BUNDLED_FILES.iter().zip(&files).map(|(n, b)| (n.to_string(), b.clone())).collect();
    assets.insert("teacher".into(), vec![1, 2, 3]);
    assert_eq!(bundled_data(&assets).unwrap(), s);
    // No data assets: natively, the copy in the binary; some but not all: an error naming the missing ones.
    assert_eq!(bundled_data(&Assets::new()).unwrap(), s);
    assets.remove(data::BUNDLED_FILES[3]);
    let e = bundled_data(&assets).unwrap_err().to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte.gz") && !e.contains("train-images"), "{e}");
    // Swapped files: the parser names the file and the problem.
    let e = data::bundled_from([&files[1], &files[0], &files[2], &files[3]]).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte.gz"), "{e}");
}

#[test]
fn installed_fashion_mnist_loads_when_present() {
    if !Path::new(data::spec::FASHION_MNIST_DIR).is_dir() {
        eprintln!("SKIPPED: {} is not installed", data::spec::FASHION_MNIST_DIR);
        return;
    }
    let s: DataSpec = "fashion-mnist".parse().unwrap();
    let s = s.load(&LoadOptions::default()).unwrap();
    assert_eq!((s.train.n, s.test.n), (60000, 10000));
    assert_eq!(s.train.class_counts(), vec![6000; 10]);
    // The bundled subset is the first 500 of each class, in order.
    let b = data::bundled().unwrap();
    let first: Vec<usize> = (0..s.train.n).filter(|&i| s.train.labels[i] == 3).take(3).collect();
    let bfirst: Vec<usize> = (0..b.train.n).filter(|&i| b.train.labels[i] == 3).take(3).collect();
    for (i, j) in first.iter().zip(&bfirst) {
        assert_eq!(s.train.image(*i), b.train.image(*j));
    }
}

// ---- random numbers and sampling (CPU) --------------------------------------------------

#[test]
fn rng_port_matches_known_values_and_beta_moments() {
    // pcg_hash(0) from the reference algorithm (Jarzynski & Olano 2020).
    assert_eq!(rng::pcg_hash(0), 129708002);
    let key = rng::dkey(3, 4, 5);
    for alpha in [0.2f32, 0.8, 1.0, 2.0] {
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|i| rng::beta_draw(rng::dkey(11, i, 1), 1, alpha) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let want_var = 1.0 / (4.0 * (2.0 * alpha as f64 + 1.0));
        assert!((mean - 0.5).abs() < 0.01, "Beta({alpha}) mean {mean}");
        assert!((var - want_var).abs() < 0.1 * want_var, "Beta({alpha}) variance {var}, want {want_var}");
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
    }
    let u: Vec<f32> = (0..1000).map(|i| rng::du01(key, i, 0)).collect();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
}

#[test]
fn training_order_is_a_permutation_per_epoch() {
    for n in [1u32, 2, 3, 5, 16, 37, 1000, 4097] {
        let hb = rng::feistel_half_bits(n);
        let k = rng::feistel_keys(9, 0);
        let mut seen = vec![false; n as usize];
        for x in 0..n {
            let y = rng::feistel(x, n, hb, k) as usize;
            assert!(!seen[y], "n {n}: {y} twice");
            seen[y] = true;
        }
    }
    // The stream of rows: each epoch of n rows visits every sample once, epochs differ, and a
    // different seed gives a different order.
    let (n, b) = (37u32, 8u32);
    let rows = |seed| -> Vec<u32> { (0..15).flat_map(|s| (0..b).map(move |r| rng::train_index(n, b, seed, s, r))).collect() };
    let r = rows(1);
    let epochs: Vec<&[u32]> = r.chunks(n as usize).take(3).collect();
    for e in &epochs {
        let mut v = e.to_vec();
        v.sort();
        assert_eq!(v, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    assert_ne!(rows(2)[..37], r[..37]);
}

// ---- GPU: sampling and gathering --------------------------------------------------------

#[test]
fn gpu_sampling_matches_the_cpu_order_in_train_and_eval() {
    let ds = toy(37, 1, 3, 3, 5);
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, &ds, "s").unwrap();
    let counter = GpuData::counter(&mut store, "count").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let labels = g.state(&data.labels);
    let (ti, tl, tv) = g.data_sample(labels, step, 37, 8, Sampling::Train, 1234).unwrap();
    let (ei, el, ev) = g.data_sample(labels, step, 37, 8, Sampling::Eval, 0).unwrap();
    for v in [ti, tl, tv, ei, el, ev] {
        g.keep(v);
    }
    g.data_tick(step).unwrap();
    let r = Runner::new(&g, &mut store);
    for s in 0..12u32 {
        let f = r.step(&[tv, ev]);
        let (ti_, tl_, ei_, el_) = (r.step_u32(ti), r.step_u32(tl), r.step_u32(ei), r.step_u32(el));
        for b in 0..8u32 {
            let want = rng::train_index(37, 8, 1234, s, b);
            assert_eq!(ti_[b as usize], want, "train row {b} of step {s}");
            assert_eq!(tl_[b as usize], ds.labels[want as usize]);
            let (ei_want, valid) = rng::eval_index(37, 8, s, b);
            assert_eq!(ei_[b as usize], ei_want, "eval row {b} of step {s}");
            assert_eq!(el_[b as usize], ds.labels[ei_want as usize]);
            assert_eq!(f[1][b as usize], if valid { 1.0 } else { 0.0 });
        }
        assert!(f[0].iter().all(|&v| v == 1.0));
        // Eval: 5 batches per pass; the 5th has 37 - 32 = 5 real rows.
        let real = f[1].iter().filter(|&&v| v == 1.0).count();
        assert_eq!(real, if s % 5 == 4 { 5 } else { 8 });
    }
    assert_eq!(data.eval_batches(8), 5);
}

#[test]
fn gather_reads_images_across_several_pages() {
    // 3x5x5 = 75 bytes per image (19 words, the last one padded); 5 images per page.
    let ds = toy(23, 3, 5, 5, 4);
    let mut store = Store::new(0);
    let data = GpuData::upload_paged(&mut store, &ds, "p", 19 * 4 * 5).unwrap();
    assert_eq!((data.stride, data.per_page, data.pages.len()), (19, 5, 5));
    let mut g = Graph::new();
    let idx = g.input_u32("idx", &[9]).unwrap();
    let pages: Vec<Var> = data.pages.iter().map(|p| g.state(p)).collect();
    let raw = g.data_gather(idx, &pages, data.stride, data.per_page).unwrap();
    g.keep(raw);
    let plan = Plan::compile(&ctx(), &g, &mut store, "gather").unwrap();
    let want_idx = [22u32, 0, 4, 5, 9, 10, 14, 15, 19];
    plan.write_u32(idx, &want_idx).unwrap();
    plan.step().unwrap();
    let got = plan.read_u32(raw).unwrap();
    for (b, &i) in want_idx.iter().enumerate() {
        let words = &got[b * 19..(b + 1) * 19];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).take(75).collect();
        assert_eq!(bytes, ds.image(i as usize), "image {i} (page {})", i / 5);
    }
}

// ---- GPU: augmentation kernels vs their Rust twins --------------------------------------

fn all_crops() -> Vec<(&'static str, Augment, usize)> {
    let j = Some(Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 });
    let blur = Some(Blur { sigma: (0.1, 2.0), kernel: 5, p: 0.5 });
    vec![
        ("full resize", Augment { crop: Crop::Full, hflip: 0.5, ..Augment::none() }, 13),
        ("pad crop", Augment { crop: Crop::Pad { padding: 3 }, hflip: 0.5, jitter: j, grayscale: 0.3, blur }, 10),
        (
            "resized crop",
            Augment {
                crop: Crop::ResizedCrop { scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0) },
                hflip: 0.5,
                jitter: j,
                grayscale: 0.2,
                blur,
            },
            12,
        ),
        ("resized crop, fallback", Augment { crop: Crop::ResizedCrop { scale: (0.9, 1.0), ratio: (3.0, 4.0) }, ..Augment::none() }, 8),
        ("center", Augment { crop: Crop::Center { resize: 12 }, hflip: 0.5, ..Augment::none() }, 9),
    ]
}

#[test]
fn view_params_and_geometry_match_the_cpu_twin() {
    let ds = toy(19, 3, 10, 10, 3);
    for (name, aug, size) in all_crops() {
        let mut store = Store::new(0);
        let data = GpuData::upload(&ctx(), &mut store, &ds, "v").unwrap();
        let counter = GpuData::counter(&mut store, "count").unwrap();
        let mut g = Graph::new();
        let step = g.state(&counter);
        let labels = g.state(&data.labels);
        let (idx, _, _) = g.data_sample(labels, step, ds.n, 6, Sampling::Train, 5).unwrap();
        let pages: Vec<Var> = data.pages.iter().map(|p| g.state(p)).collect();
        let raw = g.data_gather(idx, &pages, data.stride, data.per_page).unwrap();
        let rec = g.data_view_params(step, (10, 10), (size, size), 12, &aug, 77, 3).unwrap();
        let img = g.data_geom(raw, rec, (3, 10, 10), (size, size)).unwrap();
        for v in [raw, rec, img] {
            g.keep(v);
        }
        let feeds_step = step;
        g.data_tick(step).unwrap();
        let r = Runner::new(&g, &mut store);
        let mut fallback_seen = false;
        for s in 0..3u32 {
            let f = r.step(&[rec, img]);
            let rawv = r.step_u32(raw);
            // Records: the whole-graph CPU evaluation from the same counter value.
            let feeds = data_feeds(&mut g, &data, &ds, feeds_step, s);
            let want = g.eval_cpu(&feeds).unwrap();
            let want_rec = &want[&rec].data;
            for i in 0..12 {
                let (gr, wr) = (&f[0][i * REC..(i + 1) * REC], &want_rec[i * REC..(i + 1) * REC]);
                for k in [8, 9, 14, 15, 16, 17, 18, 20, 21, 22, 23] {
                    assert_eq!(gr[k] as f64, wr[k], "{name}: record {i} field {k} at step {s}: {gr:?} vs {wr:?}");
                }
                assert_close(&format!("{name}: record {i}"), gr, wr, 1e-5, 1e-5);
                fallback_seen |= name.contains("fallback") && gr[22] == 3.0 && gr[23] == 10.0;
            }
            // Pixels: the geometry twin on the GPU's own inputs.
            let want_img = cpu_op(&[(&[6, 75], DType::U32, u64s(&rawv)), (&[12, REC], DType::F32, f64s(&f[0]))], |g, x| {
                g.data_geom(x[0], x[1], (3, 10, 10), (size, size)).unwrap()
            });
            assert_close(&format!("{name}: pixels at step {s}"), &f[1], &want_img, 1e-5, 1e-5);
        }
        if name.contains("fallback") {
            assert!(fallback_seen, "the central fallback of RandomResizedCrop was exercised");
        }
    }
}

fn rec_with(jit: bool, f: [f64; 4], order: [usize; 4], gray: bool, sigma: f64) -> Vec<f64> {
    let mut r = vec![0.0; REC];
    r[9] = if jit { 1.0 } else { 0.0 };
    r[10..14].copy_from_slice(&f);
    for k in 0..4 {
        r[14 + k] = order[k] as f64;
    }
    r[18] = if gray { 1.0 } else { 0.0 };
    r[19] = sigma;
    r
}

#[test]
fn color_jitter_and_grayscale_match_the_cpu_twin() {
    let orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]];
    for c in [3usize, 1] {
        let (m, h, w) = (6usize, 17usize, 19usize);
        let mut recs = Vec::new();
        for i in 0..m {
            let f = [0.6 + 0.15 * i as f64, 1.4 - 0.1 * i as f64, 0.7 + 0.1 * i as f64, -0.1 + 0.04 * i as f64];
            recs.extend(rec_with(i != 5, f, orders[i % 4], i % 2 == 1, 0.0));
        }
        let img: Vec<f64> = (0..m * c * h * w).map(|i| rng::rand01(1, 2, i as u32) as f64).collect();
        let mut g = Graph::new();
        let x = g.input("x", &[m, c, h, w]).unwrap();
        let rv = g.input("rec", &[m, REC]).unwrap();
        let y = g.data_color(x, rv).unwrap();
        g.keep(y);
        let mut store = Store::new(0);
        let plan = Plan::compile(&ctx(), &g, &mut store, "color").unwrap();
        let img32: Vec<f32> = img.iter().map(|&v| v as f32).collect();
        let rec32: Vec<f32> = recs.iter().map(|&v| v as f32).collect();
        plan.write(x, &img32).unwrap();
        plan.write(rv, &rec32).unwrap();
        plan.step().unwrap();
        let got = plan.read(y).unwrap();
        let want = cpu_op(&[(&[m, c, h, w], DType::F32, f64s(&img32)), (&[m, REC], DType::F32, f64s(&rec32))], |g, v| {
            g.data_color(v[0], v[1]).unwrap()
        });
        assert_close(&format!("colour, {c} channel(s)"), &got, &want, 2e-5, 1e-4);
        // The last image has jitter off and (5 is odd) grayscale on.
        let last = &got[5 * c * h * w..];
        if c == 3 {
            let hw = h * w;
            assert!((0..hw).all(|p| last[p] == last[hw + p] && last[p] == last[2 * hw + p]), "grayscale makes equal channels");
        } else {
            assert_eq!(last, &img32[5 * h * w..], "1-channel grayscale is a no-op");
        }
        assert!(got.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn gaussian_blur_matches_the_cpu_twin() {
    let (m, c, h, w) = (4usize, 3usize, 9usize, 7usize);
    let mut recs = Vec::new();
    for sigma in [0.0, 0.3, 1.0, 2.5] {
        recs.extend(rec_with(false, [1.0; 4], [0, 1, 2, 3], false, sigma));
    }
    let img: Vec<f32> = (0..m * c * h * w).map(|i| rng::rand01(4, 5, i as u32)).collect();
    let mut g = Graph::new();
    let x = g.input("x", &[m, c, h, w]).unwrap();
    let rv = g.input("rec", &[m, REC]).unwrap();
    let y = g.data_blur(x, rv, 5).unwrap();
    g.keep(y);
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx(), &g, &mut store, "blur").unwrap();
    let rec32: Vec<f32> = recs.iter().map(|&v| v as f32).collect();
    plan.write(x, &img).unwrap();
    plan.write(rv, &rec32).unwrap();
    plan.step().unwrap();
    let got = plan.read(y).unwrap();
    let want = cpu_op(&[(&[m, c, h, w], DType::F32, f64s(&img)), (&[m, REC], DType::F32, f64s(&rec32))], |g, v| {
        g.data_blur(v[0], v[1], 5).unwrap()
    });
    assert_close("blur", &got, &want, 1e-5, 1e-4);
    assert_eq!(&got[..c * h * w], &img[..c * h * w], "sigma 0 leaves the image alone");
    assert!(g.data_blur(x, rv, 4).is_err() && g.data_blur(x, rv, 15).is_err());
}

#[test]
fn patches_match_the_cpu_twin() {
    let (b, c, s) = (3usize, 2usize, 11usize);
    let p = Patches { size: 4, jitter: 1, keep: 5, grid: 3 };
    let img: Vec<f32> = (0..b * c * s * s).map(|i| i as f32).collect();
    let mut store = Store::new(0);
    let counter = GpuData::counter(&mut store, "count").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let x = g.input("x", &[b, c, s, s]).unwrap();
    let y = g.data_patches(x, step, &p, 42, 9).unwrap();
    g.keep(y);
    g.data_tick(step).unwrap();
    let plan = Plan::compile(&ctx(), &g, &mut store, "patches").unwrap();
    plan.write(x, &img).unwrap();
    let mut cells = std::collections::HashSet::new();
    for st in 0..3u32 {
        plan.step().unwrap();
        let got = plan.read(y).unwrap();
        assert_eq!(got.len(), b * 5 * c * 16);
        let want = cpu_op(&[(&[b, c, s, s], DType::F32, f64s(&img)), (&[1], DType::U32, vec![st as f64])], |g, v| {
            g.data_patches(v[0], v[1], &p, 42, 9).unwrap()
        });
        assert_close(&format!("patches at step {st}"), &got, &want, 0.0, 0.0);
        for k in 0..b * 5 {
            cells.insert(got[k * c * 16] as usize);
        }
    }
    assert!(cells.len() > 10, "patch origins vary with the sample and the step");
}

#[test]
fn mixup_cutmix_and_soft_targets() {
    let (bsz, classes, size) = (6usize, 5usize, 8usize);
    let mixes = [
        ("mixup", Mix { mixup_alpha: 0.8, cutmix_alpha: 0.0, prob: 1.0, switch_prob: 0.5 }),
        ("cutmix", Mix { mixup_alpha: 0.0, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5 }),
        ("both", Mix::timm_default()),
        ("half of the time", Mix { prob: 0.5, ..Mix::timm_default() }),
    ];
    for (name, mix) in mixes {
        let mut store = Store::new(0);
        let counter = GpuData::counter(&mut store, "count").unwrap();
        let mut g = Graph::new();
        let step = g.state(&counter);
        let x = g.input("x", &[bsz, 1, size - 2, size - 2]).unwrap();
        let labels = g.labels("y", &[bsz], classes).unwrap();
        let mp = g.data_mix(step, &mix, (size, size), 3, 4).unwrap();
        let out = g.data_finish(x, Some(mp), 1, 3, &[0.5, 0.4, 0.3], &[0.2, 0.25, 0.3]).unwrap();
        let t = g.data_targets(labels, Some(mp), classes, 0.1).unwrap();
        for v in [mp, out, t] {
            g.keep(v);
        }
        g.data_tick(step).unwrap();
        let plan = Plan::compile(&ctx(), &g, &mut store, "mix").unwrap();
        let img: Vec<f32> = (0..bsz * 36).map(|i| rng::rand01(8, 9, i as u32)).collect();
        let lab: Vec<u32> = vec![0, 1, 2, 3, 4, 2];
        plan.write(x, &img).unwrap();
        plan.write_u32(labels, &lab).unwrap();
        let mut modes = std::collections::HashSet::new();
        for st in 0..12u32 {
            plan.step().unwrap();
            let (m, o, tt) = (plan.read(mp).unwrap(), plan.read(out).unwrap(), plan.read(t).unwrap());
            // Parameters vs the twin (f32 maths: lambda to rounding, mode and box exact).
            let want = cpu_op(&[(&[1], DType::U32, vec![st as f64])], |g, v| g.data_mix(v[0], &mix, (size, size), 3, 4).unwrap());
            assert_eq!(m[0] as f64, want[0], "{name}: mode at step {st}");
            assert!((m[1] as f64 - want[1]).abs() < 1e-4, "{name}: lambda {} vs {}", m[1], want[1]);
            assert_eq!(&f64s(&m[2..6])[..], &want[2..6], "{name}: cutmix box at step {st}");
            modes.insert(m[0] as u32);
            let lam = m[1] as f64;
            assert!((0.0..=1.0).contains(&lam));
            if m[0] == 2.0 {
                let area = (m[3] - m[2]) as f64 * (m[5] - m[4]) as f64;
                assert!((lam - (1.0 - area / 64.0)).abs() < 1e-6, "{name}: cutmix lambda is the box-corrected area");
            }
            // Images: the finish twin on the GPU's own mix parameters.
            let want_o = cpu_op(&[(&[bsz, 1, 6, 6], DType::F32, f64s(&img)), (&[8], DType::F32, f64s(&m))], |g, v| {
                g.data_finish(v[0], Some(v[1]), 1, 3, &[0.5, 0.4, 0.3], &[0.2, 0.25, 0.3]).unwrap()
            });
            assert_close(&format!("{name}: mixed images"), &o, &want_o, 1e-5, 1e-5);
            // Targets: rows sum to 1 and carry lambda.
            let (off, on) = (0.1 / classes as f64, 0.9 + 0.1 / classes as f64);
            for b in 0..bsz {
                let row = &tt[b * classes..(b + 1) * classes];
                assert!((row.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5, "{name}: row {b} sums to 1");
                let (y1, y2) = (lab[b] as usize, lab[bsz - 1 - b] as usize);
                for (k, &got) in row.iter().enumerate() {
                    let want = lam * if k == y1 { on } else { off } + (1.0 - lam) * if k == y2 { on } else { off };
                    assert!((got as f64 - want).abs() < 1e-5, "{name}: target [{b}, {k}] {got} vs {want}");
                }
            }
        }
        match name {
            "mixup" => assert_eq!(modes, [1].into()),
            "cutmix" => assert_eq!(modes, [2].into()),
            "both" => assert_eq!(modes, [1, 2].into()),
            _ => assert!(modes.contains(&0) && modes.len() >= 2, "{name}: {modes:?}"),
        }
    }
}

// ---- whole batches ----------------------------------------------------------------------

fn full_spec(batch: usize) -> data::BatchSpec {
    data::BatchSpec {
        augment: Augment {
            crop: Crop::ResizedCrop { scale: (0.2, 1.0), ratio: (0.75, 4.0 / 3.0) },
            hflip: 0.5,
            jitter: Some(Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 }),
            grayscale: 0.2,
            blur: Some(Blur { sigma: (0.1, 1.0), kernel: 3, p: 0.5 }),
        },
        size: 28,
        out_size: 32,
        channels: 3,
        mix: Some(Mix::timm_default()),
        smoothing: 0.1,
        ..data::BatchSpec::train(batch).normalize(&data::stats::FASHION_MNIST_MEAN, &data::stats::FASHION_MNIST_STD)
    }
}

fn batches(ds: &Dataset, spec: &data::BatchSpec, seed: u64, steps: usize) -> Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, ds, "train").unwrap();
    let counter = GpuData::counter(&mut store, "step").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let b = g.batch(&data, spec, step, seed).unwrap();
    let t = b.soft_targets.unwrap();
    for v in [b.images, b.labels, t] {
        g.keep(v);
    }
    g.data_tick(step).unwrap();
    let plan = Plan::compile(&ctx(), &g, &mut store, "batch").unwrap();
    (0..steps)
        .map(|_| {
            plan.step().unwrap();
            (plan.read(b.images).unwrap(), plan.read(b.labels).unwrap(), plan.read(t).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_same_batches_and_the_whole_chain_matches_the_cpu() {
    let ds = data::bundled().unwrap().train.head(200);
    let spec = full_spec(8);
    let a = batches(&ds, &spec, 7, 3);
    let b = batches(&ds, &spec, 7, 3);
    let c = batches(&ds, &spec, 8, 3);
    for s in 0..3 {
        assert_eq!(a[s].0, b[s].0, "step {s}: the same seed gives the same images, bit for bit");
        assert_eq!(a[s].1, b[s].1);
        assert_eq!(a[s].2, b[s].2);
        assert_ne!(a[s].0, c[s].0, "step {s}: another seed gives other images");
        assert_eq!(a[s].0.len(), 8 * 3 * 32 * 32);
    }
    assert_ne!(a[0].0, a[1].0, "each step makes a new batch");

    // The whole chain (sample, gather, view, geometry, colour, blur, mix, finish, targets) on
    // the CPU, from the dataset and the counter alone.
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, &ds, "train").unwrap();
    let counter = GpuData::counter(&mut store, "step").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let bt = g.batch(&data, &spec, step, 7).unwrap();
    for s in 0..3u32 {
        let feeds = data_feeds(&mut g, &data, &ds, step, s);
        let want = g.eval_cpu(&feeds).unwrap();
        assert_close(&format!("whole batch, step {s}"), &a[s as usize].0, &want[&bt.images].data, 1e-4, 1e-4);
        assert_close(&format!("targets, step {s}"), &a[s as usize].2, &want[&bt.soft_targets.unwrap()].data, 1e-5, 1e-4);
        assert_eq!(f64s(&a[s as usize].1), want[&bt.labels].data);
    }
}

#[test]
fn eval_batches_are_the_test_set_in_order_normalised() {
    let ds = data::bundled().unwrap().test.head(20);
    let spec = data::BatchSpec { out_size: 32, ..data::BatchSpec::eval(8).normalize(&[0.5], &[0.25]) };
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, &ds, "test").unwrap();
    let counter = GpuData::counter(&mut store, "eval").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let b = g.batch(&data, &spec, step, 0).unwrap();
    for v in [b.images, b.labels, b.valid] {
        g.keep(v);
    }
    g.data_tick(step).unwrap();
    let plan = Plan::compile(&ctx(), &g, &mut store, "eval").unwrap();
    for pass in 0..2 {
        store.write_state(&counter, &[0.0]).unwrap();
        for i in 0..data.eval_batches(8) {
            plan.step().unwrap();
            let (img, lab, valid) = (plan.read(b.images).unwrap(), plan.read(b.labels).unwrap(), plan.read(b.valid).unwrap());
            for r in 0..8 {
                let k = i * 8 + r;
                assert_eq!(valid[r], if k < 20 { 1.0 } else { 0.0 }, "pass {pass} batch {i} row {r}");
                let src = k % 20;
                assert_eq!(lab[r] as u32, ds.labels[src]);
                let im = &img[r * 1024..(r + 1) * 1024];
                assert_eq!(im[0], -2.0, "zero padding normalises to (0 - 0.5) / 0.25");
                for y in 0..28 {
                    for x in 0..28 {
                        let want = (ds.image(src)[y * 28 + x] as f32 / 255.0 - 0.5) / 0.25;
                        assert!((im[(y + 2) * 32 + x + 2] - want).abs() < 1e-5);
                    }
                }
            }
        }
    }
}

#[test]
fn obow_multicrop_views() {
    let ds = data::bundled().unwrap().train.head(64);
    let spec = MultiCropSpec { channels: 3, ..MultiCropSpec::obow(4, 28) }.clone();
    let spec = MultiCropSpec { mean: vec![0.5], std: vec![0.5], ..spec };
    assert_eq!((spec.teacher_resize, spec.patch_base, spec.patches.size, spec.patches.jitter), (32, 37, 14, 4));
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, &ds, "train").unwrap();
    let counter = GpuData::counter(&mut store, "step").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let mc = g.multicrop(&data, &spec, step, 3).unwrap();
    let (large, patches) = (mc.large.unwrap(), mc.patches.unwrap());
    assert_eq!(g.shape(mc.teacher), &[4, 3, 28, 28]);
    assert_eq!(g.shape(large), &[8, 3, 28, 28]);
    assert_eq!(g.shape(patches), &[20, 3, 14, 14]);
    for v in [mc.teacher, large, patches] {
        g.keep(v);
    }
    g.data_tick(step).unwrap();
    let plan = Plan::compile(&ctx(), &g, &mut store, "multicrop").unwrap();
    for s in 0..2u32 {
        plan.step().unwrap();
        let got: Vec<Vec<f32>> = [mc.teacher, large, patches].iter().map(|&v| plan.read(v).unwrap()).collect();
        let feeds = data_feeds(&mut g, &data, &ds, step, s);
        let want = g.eval_cpu(&feeds).unwrap();
        for (name, v, gv) in [("teacher", mc.teacher, &got[0]), ("large crops", large, &got[1]), ("patches", patches, &got[2])] {
            assert!(gv.iter().all(|x| (-1.0..=1.0).contains(x)), "{name} normalised to [-1, 1]");
            assert_close(&format!("{name}, step {s}"), gv, &want[&v].data, 1e-4, 1e-4);
        }
        // The two large crops of a sample differ; 1-channel data is replicated to 3 channels.
        assert_ne!(&got[1][..3 * 784], &got[1][4 * 3 * 784..5 * 3 * 784]);
        assert_eq!(&got[0][..784], &got[0][784..2 * 784]);
    }
}

#[test]
fn batch_spec_errors_are_clear() {
    let ds = toy(10, 1, 6, 6, 2);
    let mut store = Store::new(0);
    let data = GpuData::upload(&ctx(), &mut store, &ds, "e").unwrap();
    let counter = GpuData::counter(&mut store, "c").unwrap();
    let mut g = Graph::new();
    let step = g.state(&counter);
    let bad = |g: &mut Graph, s: data::BatchSpec, needle: &str| {
        let e = g.batch(&data, &s, step, 0).unwrap_err().to_string();
        assert!(e.contains(needle), "'{e}' should mention '{needle}'");
    };
    bad(&mut g, data::BatchSpec { out_size: 7, ..data::BatchSpec::train(4) }, "even padding");
    bad(
        &mut g,
        data::BatchSpec { augment: Augment { crop: Crop::Center { resize: 4 }, ..Augment::none() }, ..data::BatchSpec::train(4) },
        "larger than the resized",
    );
    bad(&mut g, data::BatchSpec { augment: Augment { hflip: 1.5, ..Augment::none() }, ..data::BatchSpec::train(4) }, "probability");
    bad(&mut g, data::BatchSpec { channels: 5, ..data::BatchSpec::train(4) }, "cannot make 5 channels");
    bad(&mut g, data::BatchSpec { channels: 3, mean: vec![0.0, 0.1], ..data::BatchSpec::train(4) }, "mean has 2 values");
    assert!(matches!(GpuData::upload_paged(&mut store, &ds, "tiny", 4), Err(Error::TooLarge { .. })));
}

#[test]
fn cifar100_sized_data_spans_pages_and_uploads_after_the_store() {
    // 50000 x 3x32x32 = 153.6 MB: more than one 128 MiB storage binding on lavapipe and in
    // browsers by default. Each image is filled with a pattern of its index.
    let (n, img) = (50000usize, 3072usize);
    let mut px = vec![0u8; n * img];
    for (i, chunk) in px.chunks_mut(img).enumerate() {
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) ^ (i >> 8) ^ k.wrapping_mul(7)) as u8;
        }
    }
    let labels = (0..n).map(|i| (i % 100) as u32).collect();
    let ds = Dataset::new("big", px, labels, 3, 32, 32, (0..100).map(|k| k.to_string()).collect()).unwrap();
    let c = ctx();
    let limit = c.max_binding() / c.offset_align() * c.offset_align();
    // The store goes to the GPU first: the dataset pages are then created and written at once.
    let mut store = Store::new(0);
    store.upload(&c).unwrap();
    let data = GpuData::upload(&c, &mut store, &ds, "big").unwrap();
    assert_eq!(data.pages.len(), ((n * img) as u64).div_ceil(limit / img as u64 * img as u64) as usize);
    eprintln!("{} MB in {} page(s) of up to {} images (binding limit {limit} bytes)", n * img / 1_000_000, data.pages.len(), data.per_page);
    if limit < (n * img) as u64 {
        assert!(data.pages.len() >= 2, "{} pages under a {limit}-byte binding limit", data.pages.len());
    }
    let mut g = Graph::new();
    let idx = g.input_u32("idx", &[6]).unwrap();
    let pages: Vec<Var> = data.pages.iter().map(|p| g.state(p)).collect();
    let raw = g.data_gather(idx, &pages, data.stride, data.per_page).unwrap();
    g.keep(raw);
    let plan = Plan::compile(&c, &g, &mut store, "big").unwrap();
    let pick = [0u32, data.per_page as u32 - 1, data.per_page as u32, 43691, 49998, 49999];
    plan.write_u32(idx, &pick).unwrap();
    plan.step().unwrap();
    let got = plan.read_u32(raw).unwrap();
    for (b, &i) in pick.iter().enumerate() {
        let bytes: Vec<u8> = got[b * 768..(b + 1) * 768].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert!(bytes == ds.image(i as usize), "image {i} (page {})", i as usize / data.per_page);
    }
    drop(ds);
}

// ---- GPU kernels vs torchvision (golden file from scripts/golden_data.py) ---------------

fn golden() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/data_torchvision.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn nums(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn words(b: &[f64]) -> Vec<u32> {
    b.chunks(4)
        .map(|q| {
            let mut w = [0u8; 4];
            for (k, v) in q.iter().enumerate() {
                w[k] = *v as u8;
            }
            u32::from_le_bytes(w)
        })
        .collect()
}

/// Run one op on the GPU on given inputs.
fn gpu_op(inputs: &[(&[usize], DType, Vec<f64>)], build: impl Fn(&mut Graph, &[Var]) -> Var) -> Vec<f32> {
    let mut g = Graph::new();
    let vars: Vec<Var> = inputs
        .iter()
        .enumerate()
        .map(|(i, (s, dt, _))| match dt {
            DType::F32 => g.input(&format!("x{i}"), s).unwrap(),
            DType::U32 => g.input_u32(&format!("x{i}"), s).unwrap(),
        })
        .collect();
    let y = build(&mut g, &vars);
    g.keep(y);
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx(), &g, &mut store, "golden").unwrap();
    for (v, (_, dt, d)) in vars.iter().zip(inputs) {
        match dt {
            DType::F32 => plan.write(*v, &d.iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap(),
            DType::U32 => plan.write_u32(*v, &d.iter().map(|&x| x as u32).collect::<Vec<_>>()).unwrap(),
        }
    }
    plan.step().unwrap();
    plan.read(y).unwrap()
}

#[test]
fn geometry_matches_torchvision() {
    let gold = golden();
    for case in gold["geometry"].as_array().unwrap() {
        let (c, h, w, s) = (
            case["c"].as_u64().unwrap() as usize,
            case["h"].as_u64().unwrap() as usize,
            case["w"].as_u64().unwrap() as usize,
            case["size"].as_u64().unwrap() as usize,
        );
        let kind = case["kind"].as_str().unwrap();
        let flip = case["flip"].as_bool().unwrap();
        let p = &case["params"];
        let get = |k: &str| p[k].as_i64().unwrap() as f32;
        let sf = s as f32;
        // (top, left, height, width) of the box and the sampling map.
        let mut rec = [0f64; REC];
        let (ax, bx, lox, hix, ay, by, loy, hiy) = match kind {
            "resized_crop" | "pad_crop" => {
                let (t, l) = (get("top"), get("left"));
                let (bh, bw) = if kind == "pad_crop" { (sf, sf) } else { (get("height"), get("width")) };
                let (ax, ay) = (bw / sf, bh / sf);
                (ax, l + 0.5 * ax - 0.5, l, l + bw - 1.0, ay, t + 0.5 * ay - 0.5, t, t + bh - 1.0)
            }
            _ => (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        };
        let rec_gpu = if kind == "full" || kind == "center" {
            // Deterministic views: use the view-parameter kernel itself (flip probability 0 or 1).
            let crop = if kind == "full" { Crop::Full } else { Crop::Center { resize: get("resize") as usize } };
            let aug = Augment { crop, hflip: if flip { 1.0 } else { 0.0 }, ..Augment::none() };
            gpu_op(&[(&[1], DType::U32, vec![0.0])], |g, v| g.data_view_params(v[0], (h, w), (s, s), 1, &aug, 1, 1).unwrap())
        } else {
            for (k, v) in [ax, bx, lox, hix, ay, by, loy, hiy].into_iter().enumerate() {
                rec[k] = v as f64;
            }
            rec[8] = if flip { 1.0 } else { 0.0 };
            rec.iter().map(|&v| v as f32).collect()
        };
        let src = nums(&case["src"]);
        let raw: Vec<f64> = words(&src).into_iter().map(|x| x as f64).collect();
        let stride = raw.len();
        let got = gpu_op(&[(&[1, stride], DType::U32, raw), (&[1, REC], DType::F32, f64s(&rec_gpu))], |g, v| {
            g.data_geom(v[0], v[1], (c, h, w), (s, s)).unwrap()
        });
        assert_close(&format!("{kind} {p} flip {flip} vs torchvision"), &got, &nums(&case["out"]), 2e-6, 1e-5);
    }
}

#[test]
fn color_jitter_matches_torchvision() {
    let gold = golden();
    for case in gold["color"].as_array().unwrap() {
        let (c, h, w) = (case["c"].as_u64().unwrap() as usize, case["h"].as_u64().unwrap() as usize, case["w"].as_u64().unwrap() as usize);
        let f = nums(&case["factors"]);
        let order: Vec<usize> = nums(&case["order"]).iter().map(|&v| v as usize).collect();
        let rec = rec_with(true, [f[0], f[1], f[2], f[3]], [order[0], order[1], order[2], order[3]], case["gray"].as_bool().unwrap(), 0.0);
        let img: Vec<f64> = nums(&case["src"]).iter().map(|&b| (b as f32 / 255.0) as f64).collect();
        let got = gpu_op(&[(&[1, c, h, w], DType::F32, img), (&[1, REC], DType::F32, rec)], |g, v| g.data_color(v[0], v[1]).unwrap());
        assert_close(&format!("colour {c}ch factors {f:?} order {order:?} vs torchvision"), &got, &nums(&case["out"]), 2e-5, 1e-4);
    }
}

#[test]
fn gaussian_blur_matches_torchvision() {
    let gold = golden();
    for case in gold["blur"].as_array().unwrap() {
        let (c, h, w) = (case["c"].as_u64().unwrap() as usize, case["h"].as_u64().unwrap() as usize, case["w"].as_u64().unwrap() as usize);
        let (k, sigma) = (case["kernel"].as_u64().unwrap() as usize, case["sigma"].as_f64().unwrap());
        let rec = rec_with(false, [1.0; 4], [0, 1, 2, 3], false, sigma);
        let img: Vec<f64> = nums(&case["src"]).iter().map(|&b| (b as f32 / 255.0) as f64).collect();
        let got = gpu_op(&[(&[1, c, h, w], DType::F32, img), (&[1, REC], DType::F32, rec)], |g, v| g.data_blur(v[0], v[1], k).unwrap());
        assert_close(&format!("blur kernel {k} sigma {sigma} vs torchvision"), &got, &nums(&case["out"]), 2e-6, 1e-5);
    }
}
