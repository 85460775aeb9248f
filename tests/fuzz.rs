//! Fuzz harnesses of every parser of outside bytes, on stable Rust (see docs/FUZZ.md).
//!
//! Each test replays `tests/fuzz_corpus/<harness>/` (inputs that failed once, kept as
//! regressions), then runs 10,000 mutated inputs from a fixed seed: structure-aware edits of
//! valid files made in code, format-blind edits and random bytes. Every input runs under
//! `catch_unwind`, a time limit (1 s) and an allocation bound (a counting global allocator
//! measures the peak bytes live during the input). Long runs: `scripts/fuzz [SECONDS]`, or
//! `WEBDISTILL_FUZZ_SECONDS=60 cargo test --release --test fuzz -- --nocapture --test-threads 1`.
//!
//! Environment: `WEBDISTILL_FUZZ_SECONDS` (run that long instead of a slice),
//! `WEBDISTILL_FUZZ_EXECS` (slice length), `WEBDISTILL_FUZZ_SEED`, `WEBDISTILL_FUZZ_OUT`
//! (where failing inputs go; default target/tmp/fuzz), `WEBDISTILL_FUZZ_TIME_LIMIT_MS`.

#[path = "fuzz/binary.rs"]
mod binary;
#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/images.rs"]
mod images;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/text.rs"]
mod text;

#[global_allocator]
static ALLOC: engine::CountingAlloc = engine::CountingAlloc;

/// IDX images and labels, raw and gzip (`parse_idx_images`, `parse_idx_labels`, `idx_dataset`).
#[test]
fn idx() {
    engine::run(&binary::idx_harness());
}

/// CIFAR-10 and CIFAR-100 binary batches.
#[test]
fn cifar() {
    engine::run(&binary::cifar_harness());
}

/// PNG and JPEG files through `decode_image`.
#[test]
fn image() {
    engine::run(&images::image_harness());
}

/// Image folders through `FolderBuilder` (paths, options, images).
#[test]
fn folder() {
    engine::run(&images::folder_harness());
}

/// safetensors: `checkpoint::parse`, `metadata`, the card in it, `load_into` a small store.
#[test]
fn safetensors() {
    engine::run(&binary::safetensors_harness());
}

/// float32 .npy (`npy::parse_npy`, what `read_npy` runs on a file's bytes).
#[test]
fn npy() {
    engine::run(&binary::npy_harness());
}

/// config.toml (`TrainConfig::from_toml`, `validate`, the round trip) and recipes by name.
#[test]
fn config() {
    engine::run(&text::config_harness());
}

/// The wasm sessions' JSON settings (distill, obow, run, mlp).
#[test]
fn session() {
    engine::run(&text::session_harness());
}

/// The model card (`ModelCard::from_json`, `input`, `image_input`).
#[test]
fn card() {
    engine::run(&text::card_harness());
}

/// One file through one harness: `WEBDISTILL_FUZZ_REPLAY=HARNESS:FILE cargo test --test fuzz
/// replay -- --ignored --nocapture` prints its outcome, peak allocation, bound and time.
#[test]
#[ignore = "a tool, not a check: replays the file WEBDISTILL_FUZZ_REPLAY names"]
fn replay() {
    engine::replay(&[
        binary::idx_harness(),
        binary::cifar_harness(),
        images::image_harness(),
        images::folder_harness(),
        binary::safetensors_harness(),
        binary::npy_harness(),
        text::config_harness(),
        text::session_harness(),
        text::card_harness(),
    ]);
}
