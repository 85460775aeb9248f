//! Harnesses of text formats: a run's config.toml (and the recipes), the wasm sessions'
//! JSON settings, and the model card.

use crate::engine::{Harness, MIB};
use crate::mutate::{Rng, havoc};
use serde_json::Value;
use webdistill::session::mlp::MlpConfig;
use webdistill::session::run::{DistillSettings, ObowSettings, RunSettings};
use webdistill::train::{DistillConfig, ModelCard, ObowConfig, TrainConfig};

/// The outcome of a parse: `ok` or the error's text.
pub fn sig<T>(r: &webdistill::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

const WORDS: &[&str] = &[
    "",
    "none",
    "kd",
    "dkd",
    "dist",
    "fitnet",
    "ofa",
    "sgd",
    "adamw",
    "bundled",
    "fashion-mnist",
    "folder:x",
    "cifar10:/nope",
    "resnet20",
    "resnet8",
    "vit_micro_p4",
    "nope",
    "asset:teacher",
    "\u{0}",
    "é\u{202e}",
];

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::from(rng.interesting()),
        1 => Value::from(i64::try_from(rng.interesting()).map_or(i64::MIN, |v| -v)),
        2 => Value::from(*rng.pick(&[0.0, -0.0, 0.5, 1e-45, 3.4028235e38, 1e39, 1.7976931348623157e308, -1.0, 1e-300])),
        3 => Value::from(*rng.pick(WORDS)),
        4 => Value::from("x".repeat(rng.len(5000))),
        5 => Value::Bool(rng.one_in(2)),
        6 => Value::Null,
        7 => Value::from(rng.below(10) as u64),
        _ => Value::from(rng.below(4) as f64 + 0.25),
    }
}

fn random_value(rng: &mut Rng, keys: &[&str], depth: usize) -> Value {
    match rng.below(if depth > 3 { 1 } else { 4 }) {
        0 | 1 => scalar(rng),
        2 => Value::Array((0..rng.len(6)).map(|_| random_value(rng, keys, depth + 1)).collect()),
        _ => Value::Object((0..rng.len(4)).map(|_| (rng.pick(keys).to_string(), random_value(rng, keys, depth + 1))).collect()),
    }
}

/// A random node of a JSON tree (the root, or further down).
fn pick_node<'a>(rng: &mut Rng, v: &'a mut Value) -> &'a mut Value {
    let n = match &*v {
        Value::Object(o) => o.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if n == 0 || rng.one_in(3) {
        return v;
    }
    let i = rng.below(n);
    match v {
        Value::Object(o) => pick_node(rng, o.values_mut().nth(i).unwrap()),
        Value::Array(a) => pick_node(rng, &mut a[i]),
        _ => unreachable!(),
    }
}

/// Another value of the type of `v`: boundary and small numbers (floats where it was one),
/// the vocabulary's strings, the other boolean.
fn same_type(rng: &mut Rng, v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            Value::from(*rng.pick(&[0.0, -0.0, 0.5, 1.0, 2.0, -1.0, 1e-45, 3.4028235e38, 1e39, 1e-300, 0.1, 100.0]))
        }
        Value::Number(_) if rng.one_in(3) => Value::from(rng.interesting()),
        Value::Number(_) => Value::from(*rng.pick(&[0u64, 1, 2, 3, 4, 8, 10, 16, 32, 64, 100, 224, 1000, 1024, 1025])),
        Value::String(_) => Value::from(*rng.pick(WORDS)),
        Value::Bool(b) => Value::Bool(!b),
        _ => scalar(rng),
    }
}

/// Edit one node of a JSON tree: replace it (scalars of every type and boundary, arrays,
/// objects), or inside it add, remove or rename a key (known field names and unknown ones),
/// push, pop or duplicate an element, nest it deeper.
pub fn json_mutate(rng: &mut Rng, v: &mut Value, keys: &[&str]) {
    let node = pick_node(rng, v);
    match node {
        Value::Object(o) if rng.below(3) != 0 => match rng.below(4) {
            0 if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).unwrap().clone();
                o.remove(&k);
            }
            1 if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).unwrap().clone();
                let val = o.remove(&k).unwrap();
                o.insert(format!("{k}{}", ["z", "_", " ", "s"][rng.below(4)]), val);
            }
            _ => {
                let k = if rng.one_in(4) { format!("unknown{}", rng.below(3)) } else { rng.pick(keys).to_string() };
                let val = random_value(rng, keys, 0);
                o.insert(k, val);
            }
        },
        Value::Array(a) if rng.below(3) != 0 => match rng.below(4) {
            0 => {
                a.pop();
            }
            1 if !a.is_empty() => {
                let e = a[rng.below(a.len())].clone();
                let times = if rng.one_in(8) { rng.below(2000) } else { 1 };
                for _ in 0..times {
                    a.push(e.clone());
                }
            }
            2 => a.clear(),
            _ => a.push(scalar(rng)),
        },
        // Most of the time a value of the same type, so the input still parses and reaches
        // the checks behind the parser.
        n if rng.below(3) != 0 && !n.is_array() && !n.is_object() => *n = same_type(rng, n),
        n => {
            *n = match rng.below(6) {
                0 => Value::Array(vec![n.take()]),
                1 => Value::Object([(rng.pick(keys).to_string(), n.take())].into_iter().collect()),
                2 => random_value(rng, keys, 0),
                _ => scalar(rng),
            }
        }
    }
}

/// A JSON input: structured edits of the parsed tree (printed compact or pretty), or text
/// edits where it does not parse (or one time in four).
fn json_text_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>], keys: &[&str]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(b) {
        Ok(mut v) if !rng.one_in(4) => {
            for _ in 0..1 + rng.below(3) {
                json_mutate(rng, &mut v, keys);
            }
            if rng.one_in(2) { serde_json::to_vec(&v).unwrap() } else { serde_json::to_vec_pretty(&v).unwrap() }
        }
        _ => {
            let mut t = b.to_vec();
            havoc(rng, &mut t, pool, JSON_DICT, 1 << 16);
            t
        }
    }
}

const JSON_DICT: &[&[u8]] =
    &[b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"true", b"false", b"-", b"1e999", b"NaN", b"\\u", b"\\ud800", b"0.", b" "];

// ---------------------------------------------------------------- TOML config

fn toml_scalar(rng: &mut Rng) -> toml::Value {
    match rng.below(8) {
        0 => toml::Value::Integer(rng.interesting() as i64),
        1 => toml::Value::Integer(-(rng.below(1000) as i64) - 1),
        2 => toml::Value::Float(*rng.pick(&[f64::NAN, f64::INFINITY, -f64::INFINITY, 0.0, -0.0, 1e39, 1e-46, 3.4028235e38, -1.0])),
        3 => toml::Value::String(rng.pick(WORDS).to_string()),
        4 => toml::Value::Boolean(rng.one_in(2)),
        5 => toml::Value::Array((0..rng.len(8)).map(|_| toml::Value::Float(rng.below(3) as f64 + 0.5)).collect()),
        6 => toml::Value::Integer(rng.below(10) as i64),
        _ => toml::Value::Float(rng.below(100) as f64 / 7.0),
    }
}

fn toml_scalar_float(rng: &mut Rng) -> toml::Value {
    toml::Value::Float(*rng.pick(&[0.0, -0.0, 0.5, 1.0, 0.1, 1e-5, 2.0, -1.0, 1e39, f64::NAN, f64::INFINITY, 1e-46, 0.99]))
}

const TOML_KEYS: &[&str] = &[
    "model",
    "data",
    "img_size",
    "val_split",
    "channels",
    "epochs",
    "batch",
    "opt",
    "lr",
    "clip_grad",
    "augment",
    "crop_padding",
    "rrc_scale",
    "mixup_alpha",
    "distill",
    "method",
    "teacher",
    "ofa_stages",
    "ofa_eps",
    "obow",
    "words",
    "levels",
    "crops",
    "patches",
    "seed",
    "train_limit",
    "eval_batch",
    "init",
    "adapter",
];

fn toml_mutate_value(rng: &mut Rng, t: &mut toml::Table) {
    let mut table = t;
    // Down into a sub-table now and then.
    for _ in 0..2 {
        let subs: Vec<String> = table.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.clone()).collect();
        if subs.is_empty() || rng.one_in(2) {
            break;
        }
        let k = rng.pick(&subs).clone();
        table = table.get_mut(&k).unwrap().as_table_mut().unwrap();
    }
    let keys: Vec<String> = table.keys().cloned().collect();
    match rng.below(7) {
        0 if !keys.is_empty() => {
            table.remove(rng.pick(&keys));
        }
        1 => {
            let k = rng.pick(TOML_KEYS).to_string();
            let v = if rng.one_in(4) {
                let mut sub = toml::Table::new();
                for _ in 0..rng.below(4) {
                    sub.insert(rng.pick(TOML_KEYS).to_string(), toml_scalar(rng));
                }
                toml::Value::Table(sub)
            } else {
                toml_scalar(rng)
            };
            table.insert(k, v);
        }
        2 => {
            // A sub-table the config knows, with values that parse.
            let sub = match rng.below(3) {
                0 => toml::Value::try_from(DistillConfig { teacher: "resnet20".into(), ..Default::default() }).unwrap(),
                1 => toml::Value::try_from(ObowConfig::default()).unwrap(),
                _ => toml::Value::try_from(webdistill::train::AugmentConfig::default()).unwrap(),
            };
            table.insert(["distill", "obow", "augment"][rng.below(3)].to_string(), sub);
        }
        3 | 4 if !keys.is_empty() => {
            // The same type, so the config still parses and reaches `validate`.
            let k = rng.pick(&keys).clone();
            let v = table.get_mut(&k).unwrap();
            *v = match &*v {
                toml::Value::Integer(_) if rng.one_in(3) => toml::Value::Integer(rng.interesting() as i64),
                toml::Value::Integer(_) => toml::Value::Integer(*rng.pick(&[0i64, 1, 2, 3, 4, 8, 9, 10, 32, 64, 100, 1024, 8192])),
                toml::Value::Float(_) => toml_scalar_float(rng),
                toml::Value::String(_) => toml::Value::String(rng.pick(WORDS).to_string()),
                toml::Value::Boolean(b) => toml::Value::Boolean(!*b),
                toml::Value::Array(a) => {
                    let mut a = a.clone();
                    match rng.below(3) {
                        0 => a.clear(),
                        1 => a.push(a.first().cloned().unwrap_or(toml::Value::Integer(1))),
                        _ => {
                            a.pop();
                        }
                    }
                    toml::Value::Array(a)
                }
                other => other.clone(),
            };
        }
        _ if !keys.is_empty() => {
            let k = rng.pick(&keys).clone();
            let v = table.get_mut(&k).unwrap();
            *v = match v {
                toml::Value::Array(a) if rng.one_in(2) => {
                    let mut a = a.clone();
                    if rng.one_in(2) {
                        a.clear();
                    } else {
                        a.push(toml_scalar(rng));
                    }
                    toml::Value::Array(a)
                }
                _ => toml_scalar(rng),
            };
        }
        _ => {}
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let mut v = vec![TrainConfig::default().to_toml().unwrap().into_bytes()];
    for p in ["cifar-cnn", "cifar-vit", "quick", "obow"] {
        v.push(TrainConfig::preset(p).unwrap().to_toml().unwrap().into_bytes());
    }
    let distil = TrainConfig {
        distill: Some(DistillConfig { teacher: "resnet20".into(), ofa_eps: vec![1.0, 1.2, 1.5], ..Default::default() }),
        clip_grad: Some(5.0),
        ..TrainConfig::preset("cifar-vit").unwrap()
    };
    v.push(distil.to_toml().unwrap().into_bytes());
    v.push(b"model = \"resnet8\"\nepochs = 1\n[augment]\nhflip = false\n".to_vec());
    v.push(Vec::new());
    v
}

fn config_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let text = String::from_utf8_lossy(b);
    match toml::from_str::<toml::Table>(&text) {
        Ok(mut t) if !rng.one_in(4) => {
            for _ in 0..1 + rng.below(3) {
                toml_mutate_value(rng, &mut t);
            }
            toml::to_string(&t).map(String::into_bytes).unwrap_or_else(|_| b.to_vec())
        }
        _ => {
            let mut t = b.to_vec();
            havoc(rng, &mut t, pool, TOML_DICT, 1 << 16);
            t
        }
    }
}

const TOML_DICT: &[&[u8]] = &[
    b"=",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b"\"",
    b"'",
    b"'''",
    b"\"\"\"",
    b"\n",
    b".",
    b",",
    b"#",
    b"true",
    b"nan",
    b"inf",
    b"1979-05-27T07:32:00Z",
    b"0x",
    b"_",
    b"\\u",
    b"[distill]\n",
    b"[obow]\n",
    b"[augment]\n",
];

fn check_config(c: &TrainConfig, out: &mut String) {
    out.push_str(&format!(" | validate: {}", sig(&c.validate())));
    // What it writes back reads back as the same config.
    let t = c.to_toml();
    out.push_str(&format!(" | to_toml: {}", sig(&t)));
    if let Ok(t) = t {
        let back = TrainConfig::from_toml(&t, "round trip").unwrap_or_else(|e| panic!("a config it wrote does not read back: {e}"));
        assert_eq!(back.to_toml().ok().as_deref(), Some(t.as_str()), "round trip changed the config");
    }
}

fn config_run(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let mut out = String::new();
    match TrainConfig::from_toml(&text, "config.toml") {
        Ok(c) => {
            out.push_str("ok");
            check_config(&c, &mut out);
        }
        Err(e) => out.push_str(&e.to_string()),
    }
    // A recipe by name (the first word of the input).
    let name: String = text.chars().take_while(|c| !c.is_whitespace()).take(16).collect();
    if let Ok(c) = TrainConfig::preset(&name) {
        out.push_str(" | preset");
        check_config(&c, &mut out);
    }
    out
}

/// TOML: the parser's events and spans (tens of bytes per token, and a token can be one
/// character: `.....` is 90x; it recovers from errors and keeps going, about 180 bytes per
/// stray `}`, linearly), its error quoting the line under a caret line as long, and the
/// config's own vectors: 256x.
fn toml_bound(b: &[u8]) -> u64 {
    256 * b.len() as u64 + MIB
}

/// JSON read straight into a struct (the card): strings, vectors of 4-byte floats from
/// 2-character items, the error text: 64x.
fn text_bound(b: &[u8]) -> u64 {
    64 * b.len() as u64 + MIB
}

pub fn config_harness() -> Harness {
    Harness {
        name: "config",
        seeds: config_seeds,
        mutate: config_mutate,
        dict: TOML_DICT,
        run: config_run,
        bound: toml_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}

// ---------------------------------------------------------------- session settings (JSON)

const SESSION_KEYS: &[&str] = &[
    "student",
    "teacher",
    "method",
    "eps",
    "temperature",
    "batch",
    "lr",
    "epochs",
    "train_limit",
    "test_limit",
    "eval_batch",
    "seed",
    "model",
    "words",
    "config",
    "classes",
    "train_per_class",
    "test_per_class",
    "turns",
    "noise",
    "hidden",
    "layers",
    "weight_decay",
    "distill",
    "obow",
    "augment",
    "opt",
    "data",
];

fn session_seeds() -> Vec<Vec<u8>> {
    let mut v = vec![
        serde_json::to_vec(&DistillSettings::default()).unwrap(),
        serde_json::to_vec(&ObowSettings::default()).unwrap(),
        serde_json::to_vec(&RunSettings::default()).unwrap(),
        serde_json::to_vec(&MlpConfig::default()).unwrap(),
        br#"{"student":"vit_nano_p4","method":"kd","batch":16}"#.to_vec(),
        br#"{"config":{"model":"resnet8","distill":{"method":"none"}}}"#.to_vec(),
        br#"{"model":"resnet8","words":64,"batch":32}"#.to_vec(),
        b"{}".to_vec(),
        b"null".to_vec(),
    ];
    let obow_run = RunSettings { config: TrainConfig::preset("obow").unwrap() };
    v.push(serde_json::to_vec(&obow_run).unwrap());
    v
}

fn session_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    json_text_mutate(rng, b, pool, SESSION_KEYS)
}

/// As `session::parse_config` does: null is `{}`, then the kind's settings.
fn settings<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, serde_json::Error> {
    let v = if v.is_null() { serde_json::json!({}) } else { v.clone() };
    serde_json::from_value(v)
}

fn session_run(b: &[u8]) -> String {
    // The page hands settings over as JSON.stringify's text.
    let v: Value = match serde_json::from_slice(b) {
        Ok(v) => v,
        Err(e) => return format!("json: {e}"),
    };
    let mut out = String::new();
    let mut note = |kind: &str, r: String| out.push_str(&format!("{kind}: {r} | "));
    match settings::<DistillSettings>(&v) {
        Ok(s) => {
            let c = s.config();
            note("distill", format!("ok {}", sig(&c.validate())));
            let echo = serde_json::to_value(&s).map(|_| ()).map_err(|e| e.to_string());
            assert!(echo.is_ok(), "settings it read do not print: {echo:?}");
        }
        Err(e) => note("distill", e.to_string()),
    }
    match settings::<ObowSettings>(&v) {
        Ok(s) => {
            let c = s.config();
            note("obow", format!("ok {}", sig(&c.and_then(|c| c.validate()))));
        }
        Err(e) => note("obow", e.to_string()),
    }
    match settings::<RunSettings>(&v) {
        Ok(s) => note("run", format!("ok {}", sig(&s.config.validate()))),
        Err(e) => note("run", e.to_string()),
    }
    match settings::<MlpConfig>(&v) {
        Ok(_) => note("mlp", "ok".into()),
        Err(e) => note("mlp", e.to_string()),
    }
    out
}

/// Session JSON: the value tree, whose objects are B-tree maps (the smallest node holds 11
/// entries, about 630 bytes: 90x the 7 bytes of `{"a":0}`), and its copy per kind
/// (`parse_config` clones it): 256x.
fn session_bound(b: &[u8]) -> u64 {
    256 * b.len() as u64 + MIB
}

pub fn session_harness() -> Harness {
    Harness {
        name: "session",
        seeds: session_seeds,
        mutate: session_mutate,
        dict: JSON_DICT,
        run: session_run,
        bound: session_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}

// ---------------------------------------------------------------- model card

pub const CARD_KEYS: &[&str] = &["model", "classes", "channels", "image_size", "input_size", "mean", "std", "data", "method", "teacher"];

fn card_seeds() -> Vec<Vec<u8>> {
    let gray = ModelCard {
        model: "resnet8".into(),
        classes: (0..10).map(|i| i.to_string()).collect(),
        channels: 1,
        image_size: 28,
        input_size: 32,
        mean: vec![0.286],
        std: vec![0.353],
        data: "fashion-mnist".into(),
        method: None,
        teacher: None,
    };
    vec![crate::binary::card_json().into_bytes(), gray.to_json().into_bytes(), b"{}".to_vec()]
}

fn card_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let parsed = if rng.one_in(3) { serde_json::from_slice::<Value>(b).ok().filter(|v| v.is_object()) } else { None };
    if let Some(mut v) = parsed {
        // Sizes and channels: consistent small ones (the card is used), or boundary values
        // (what `input` allocates from).
        if rng.one_in(2) {
            let h = 1 + rng.below(40);
            v["image_size"] = h.into();
            v["input_size"] = (h + rng.below(10)).into();
            v["channels"] = (*rng.pick(&[1usize, 3, 1, 3, 0, 2, 4])).into();
        } else {
            let k = *rng.pick(&["channels", "image_size", "input_size"]);
            v[k] = if rng.one_in(2) { Value::from(rng.dim()) } else { Value::from(rng.below(1100) as u64) };
        }
        if rng.one_in(3) {
            let n = rng.below(5);
            v[*rng.pick(&["mean", "std"])] = Value::Array((0..n).map(|_| Value::from(rng.below(3) as f64 * 0.5)).collect());
        }
        return serde_json::to_vec(&v).unwrap();
    }
    json_text_mutate(rng, b, pool, CARD_KEYS)
}

/// The pixels `input` is given: as many as the card asks for, when that is few enough to
/// make here (outside the measured region); otherwise a few.
fn card_pixels(c: &ModelCard) -> Vec<f32> {
    let n = c.channels.checked_mul(c.image_size).and_then(|n| n.checked_mul(c.image_size));
    match n {
        Some(n) if n <= 1 << 20 => (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
        _ => vec![0.5; 3],
    }
}

thread_local! {
    static PIXELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A small PNG the card's `image_input` decodes.
fn card_png() -> &'static [u8] {
    static PNG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PNG.get_or_init(|| crate::images::png(&mut Rng::new(6), 5, 3, 2, 8, false))
}

fn card_run(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let c = match ModelCard::from_json(&text, "card.json") {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let px = PIXELS.with(|p| p.take());
    let x = c.input(&px);
    if let Ok(x) = &x {
        assert_eq!(x.len(), c.channels * c.input_size * c.input_size);
    }
    let img = c.image_input(card_png(), "fuzz.png");
    if let Ok(x) = &img {
        assert_eq!(x.len(), c.channels * c.input_size * c.input_size);
    }
    format!("ok | input: {} | image: {}", sig(&x), sig(&img))
}

/// A card: the JSON (64x), and what `input` and `image_input` make from it when its sizes
/// are within the card's limits (channels 1 or 3, sides up to 1024): the f32 input (4 bytes
/// per value), the decoded image at `image_size` (its own bound) and its f32 copy.
fn card_bound(b: &[u8]) -> u64 {
    let base = text_bound(b);
    let Ok(c) = ModelCard::from_json(&String::from_utf8_lossy(b), "card.json") else { return base };
    PIXELS.with(|p| *p.borrow_mut() = card_pixels(&c));
    let (ch, s, h) = (c.channels as u64, c.input_size as u64, c.image_size as u64);
    if !(ch == 1 || ch == 3) || s > 1024 || h > s || h == 0 {
        return base;
    }
    base + 2 * (4 * ch * s * s) + crate::images::decode_bound(card_png(), c.image_size) + 2 * 4 * ch * h * h
}

pub fn card_harness() -> Harness {
    Harness {
        name: "card",
        seeds: card_seeds,
        mutate: card_mutate,
        dict: JSON_DICT,
        run: card_run,
        bound: card_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}
