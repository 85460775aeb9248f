//! The fuzz engine: a counting global allocator, the per-input checks (panic, time,
//! allocation), the mutation loop with its pool of interesting inputs, corpus replay and the
//! report. Stable Rust only: no compiler instrumentation; inputs whose outcome (the parser's
//! answer, digits masked) is new join the pool, which steers the mutations towards new errors.

use crate::mutate::{self, Rng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- counting allocator

/// Counts the bytes live on the thread that runs an input, while it runs one.
pub struct CountingAlloc;

struct Track {
    on: Cell<bool>,
    current: Cell<isize>,
    peak: Cell<isize>,
}

thread_local! {
    static TRACK: Track = const { Track { on: Cell::new(false), current: Cell::new(0), peak: Cell::new(0) } };
}

/// Live bytes during one input past which the process stops at once (the input is in its
/// harness's `current-input.bin`): far above every bound, and a guard for the machine.
const HARD_CAP: isize = 6 << 30;

#[inline]
fn note(delta: isize) {
    let _ = TRACK.try_with(|t| {
        if t.on.get() {
            let c = t.current.get().saturating_add(delta);
            t.current.set(c);
            if c > t.peak.get() {
                t.peak.set(c);
                if c > HARD_CAP {
                    t.on.set(false);
                    over_hard_cap();
                }
            }
        }
    });
}

#[cold]
fn over_hard_cap() -> ! {
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"\nfuzz: an input asked for more than 6 GiB; stopping. The input is in OUT/HARNESS/current-input.bin (8-byte length, then the bytes)\n",
    );
    std::process::abort()
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

/// Run `f` and return its result with the peak bytes it had live at once (on this thread).
pub fn tracked<R>(f: impl FnOnce() -> R) -> (R, u64) {
    TRACK.with(|t| {
        t.current.set(0);
        t.peak.set(0);
        t.on.set(true);
    });
    let r = f();
    let peak = TRACK.with(|t| {
        t.on.set(false);
        t.peak.get()
    });
    (r, peak.max(0) as u64)
}

// ---------------------------------------------------------------- panics

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let p = info.payload();
                let msg = p.downcast_ref::<&str>().copied().or(p.downcast_ref::<String>().map(String::as_str));
                let msg = msg.unwrap_or("(non-string panic payload)");
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg} (at {at})")));
            } else {
                default(info)
            }
        }));
    });
}

// ---------------------------------------------------------------- current input, watchdog

/// The input being run, in a shared memory map of `OUT/HARNESS/current-input.bin` (8-byte
/// little-endian length, then the bytes): it survives an abort, a stack overflow or a kill,
/// at the cost of one memcpy per input.
struct Current {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    map: Option<(*mut u8, usize)>,
    #[cfg(not(target_os = "linux"))]
    file: Option<std::fs::File>,
}

#[cfg(target_os = "linux")]
unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
}

impl Current {
    fn create(path: PathBuf, cap: usize) -> Current {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path);
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let map = file.ok().and_then(|f| {
                f.set_len(8 + cap as u64).ok()?;
                // PROT_READ | PROT_WRITE, MAP_SHARED: the page cache keeps what was written.
                let p = unsafe { mmap(std::ptr::null_mut(), 8 + cap, 3, 1, f.as_raw_fd(), 0) };
                (p as isize != -1 && !p.is_null()).then_some((p, 8 + cap))
            });
            Current { path, map }
        }
        #[cfg(not(target_os = "linux"))]
        Current { path, file: file.ok() }
    }

    fn set(&self, input: &[u8]) {
        #[cfg(target_os = "linux")]
        if let Some((p, len)) = self.map {
            let n = input.len().min(len - 8);
            unsafe {
                std::ptr::copy_nonoverlapping((n as u64).to_le_bytes().as_ptr(), p, 8);
                std::ptr::copy_nonoverlapping(input.as_ptr(), p.add(8), n);
            }
        }
        #[cfg(not(target_os = "linux"))]
        if let Some(f) = &self.file {
            // Elsewhere: only the first input of a batch is kept cheaply; write it all.
            use std::io::{Seek, Write};
            let mut f = f;
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = f.write_all(&(input.len() as u64).to_le_bytes());
            let _ = f.write_all(input);
        }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some((p, len)) = self.map.take() {
            unsafe { munmap(p, len) };
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the watchdog knows of a running harness.
struct Watch {
    harness: &'static str,
    current: PathBuf,
    /// Nanoseconds since [`epoch`] when the running input started; 0 between inputs.
    started: AtomicU64,
    hang: Duration,
}

fn epoch() -> Instant {
    static E: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

static WATCHES: Mutex<Vec<Weak<Watch>>> = Mutex::new(Vec::new());

fn watch(w: &Arc<Watch>) {
    static ONCE: Once = Once::new();
    epoch();
    WATCHES.lock().unwrap().push(Arc::downgrade(w));
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let mut ws = WATCHES.lock().unwrap();
                ws.retain(|w| w.strong_count() > 0);
                for w in ws.iter().filter_map(|w| w.upgrade()) {
                    let s = w.started.load(Ordering::Relaxed);
                    if s != 0 && now_ns().saturating_sub(s) > w.hang.as_nanos() as u64 {
                        eprintln!(
                            "\nfuzz: harness '{}': an input has run for more than {:?} (a hang); stopping. It is in {} (8-byte length, then the bytes)",
                            w.harness,
                            w.hang,
                            w.current.display()
                        );
                        std::process::abort();
                    }
                }
            }
        });
    });
}

// ---------------------------------------------------------------- harnesses

/// A structure-aware mutation: (random source, input, pool) -> new input.
pub type Mutator = fn(&mut Rng, &[u8], &[Vec<u8>]) -> Vec<u8>;

/// One parser under test.
pub struct Harness {
    pub name: &'static str,
    /// Valid files made in code (and a few odd ones) to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Structure-aware mutation of one input (the pool is there for splicing).
    pub mutate: Mutator,
    /// Tokens the generic mutations insert (format keywords, delimiters).
    pub dict: &'static [&'static [u8]],
    /// Run the parser on an input; the answer (`ok ...` or the error) names the outcome.
    /// Properties of a successful parse are asserted inside (a failed assert is a panic).
    pub run: fn(&[u8]) -> String,
    /// The most bytes the input may have live at once (computed before the input runs).
    pub bound: fn(&[u8]) -> u64,
    /// Inputs are cut to this length.
    pub max_len: usize,
    /// Applied after most format-blind edits (PNG: the chunks' CRCs made right again, so
    /// the edit reaches the decoder instead of its checksum test).
    pub fixup: Option<fn(&mut [u8])>,
}

pub const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Panic,
    OverTime,
    OverAlloc,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Panic => "panic",
            Kind::OverTime => "over-time",
            Kind::OverAlloc => "over-alloc",
        }
    }
}

struct Exec {
    outcome: String,
    peak: u64,
    bound: u64,
    time: Duration,
    failure: Option<(Kind, String)>,
}

struct Settings {
    seconds: Option<f64>,
    execs: usize,
    seed: u64,
    out: PathBuf,
    time_limit: Duration,
    hang: Duration,
    long: bool,
}

fn env_num(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse::<f64>().ok())
}

fn settings(name: &str) -> Settings {
    let seconds = env_num("WEBDISTILL_FUZZ_SECONDS").filter(|s| *s > 0.0);
    let long = seconds.is_some();
    let base = match std::env::var("WEBDISTILL_FUZZ_SEED").ok().and_then(|s| parse_u64(&s)) {
        Some(s) => s,
        // The CI slice is the same every time; a long run explores from a fresh seed.
        None if !long => 0x5eed_f022,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    };
    let out =
        std::env::var_os("WEBDISTILL_FUZZ_OUT").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz"));
    Settings {
        seconds,
        execs: env_num("WEBDISTILL_FUZZ_EXECS").map(|e| e as usize).unwrap_or(10_000),
        seed: base ^ fnv(name.as_bytes()),
        out: out.join(name),
        time_limit: Duration::from_millis(env_num("WEBDISTILL_FUZZ_TIME_LIMIT_MS").unwrap_or(1000.0) as u64),
        hang: Duration::from_secs(if long { 10 } else { 60 }),
        long,
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

pub fn fnv(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in b {
        h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The outcome's class: each ` | `-separated part up to its first quote or line break (what
/// parsers quote there is the input's own bytes), numbers masked, cut short. Inputs whose answers differ only in
/// sizes, positions or the bytes they quote count once.
fn outcome_class(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for part in s.split(" | ") {
        let mut last_digit = false;
        for c in part.chars().take_while(|c| !matches!(c, '"' | '`' | '\'' | '\n')).take(100) {
            let d = c.is_ascii_digit();
            if !(d && last_digit) {
                (if d { '#' } else { c }).hash(&mut h);
            }
            last_digit = d;
        }
        '|'.hash(&mut h);
    }
    h.finish()
}

struct Runner<'a> {
    h: &'a Harness,
    current: Current,
    watch: Arc<Watch>,
    time_limit: Duration,
}

impl Runner<'_> {
    fn exec(&self, input: &[u8]) -> Exec {
        let bound = (self.h.bound)(input);
        self.current.set(input);
        let t0 = Instant::now();
        self.watch.started.store(now_ns(), Ordering::Relaxed);
        QUIET.with(|q| q.set(true));
        let (r, peak) = tracked(|| panic::catch_unwind(AssertUnwindSafe(|| (self.h.run)(input))));
        QUIET.with(|q| q.set(false));
        self.watch.started.store(0, Ordering::Relaxed);
        let time = t0.elapsed();
        let (outcome, mut failure) = match r {
            Ok(o) => (o, None),
            Err(_) => {
                let msg = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".into());
                (format!("PANIC {msg}"), Some((Kind::Panic, msg)))
            }
        };
        if failure.is_none() && peak > bound {
            failure = Some((Kind::OverAlloc, format!("peak {peak} bytes live, bound {bound} (input {} bytes): {outcome}", input.len())));
        }
        if failure.is_none() && time > self.time_limit {
            // Once more, so that a busy machine is not taken for a slow parser.
            let t1 = Instant::now();
            QUIET.with(|q| q.set(true));
            let _ = panic::catch_unwind(AssertUnwindSafe(|| (self.h.run)(input)));
            QUIET.with(|q| q.set(false));
            let again = t1.elapsed();
            if again > self.time_limit {
                failure = Some((Kind::OverTime, format!("{:?} and {:?} (limit {:?}): {outcome}", time, again, self.time_limit)));
            }
        }
        Exec { outcome, peak, bound, time, failure }
    }

    /// Smaller input with the same failure (same kind; a panic at the same place), by
    /// deleting chunks, within `budget` executions.
    fn shrink(&self, input: &[u8], kind: Kind, key: &str, budget: usize) -> Vec<u8> {
        let same = |e: &Exec| match &e.failure {
            Some((k, d)) => *k == kind && (kind != Kind::Panic || panic_place(d) == key),
            None => false,
        };
        let mut best = input.to_vec();
        let mut tries = 0;
        let mut chunk = best.len().div_ceil(2).max(1);
        while chunk >= 1 && tries < budget {
            let mut i = 0;
            let mut progressed = false;
            while i < best.len() && tries < budget {
                let end = (i + chunk).min(best.len());
                let mut cand = best[..i].to_vec();
                cand.extend_from_slice(&best[end..]);
                tries += 1;
                if same(&self.exec(&cand)) {
                    best = cand;
                    progressed = true;
                } else {
                    i += chunk;
                }
            }
            if !progressed {
                if chunk == 1 {
                    break;
                }
                chunk /= 2;
            }
        }
        best
    }
}

/// Where a panic happened (its message without numbers, and its location).
fn panic_place(detail: &str) -> String {
    let at = detail.rfind("(at ").map(|i| &detail[i..]).unwrap_or("");
    let head: String = detail.chars().take(60).map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
    format!("{head} {at}")
}

#[derive(Default)]
struct Stats {
    execs: u64,
    /// Inputs some parser of the harness accepted (an outcome `ok...` or `...: ok...`).
    accepted: u64,
    counts: HashMap<Kind, u64>,
    written: Vec<String>,
    unique: HashSet<(Kind, String)>,
    slowest: Duration,
    max_ratio: f64,
    max_peak: u64,
}

fn write_failure(dir: &Path, kind: Kind, input: &[u8], detail: &str, original: Option<&[u8]>) -> String {
    let _ = std::fs::create_dir_all(dir);
    let name = format!("{}-{:016x}", kind.tag(), fnv(input));
    let bin = dir.join(format!("{name}.bin"));
    let _ = std::fs::write(&bin, input);
    let mut txt = format!("{}: {detail}\n", kind.tag());
    if let Some(o) = original.filter(|o| o.len() != input.len()) {
        let obin = dir.join(format!("{name}.orig.bin"));
        let _ = std::fs::write(&obin, o);
        txt.push_str(&format!("shrunk from {} bytes ({})\n", o.len(), obin.display()));
    }
    let _ = std::fs::write(dir.join(format!("{name}.txt")), txt);
    bin.display().to_string()
}

fn corpus_files(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.is_file() && !matches!(p.extension().and_then(|e| e.to_str()), Some("txt" | "md")));
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b))).collect()
}

/// Run a harness: replay its corpus, then fuzz (10,000 inputs, or `WEBDISTILL_FUZZ_SECONDS`),
/// print a `FUZZ` summary line, and fail if any input failed.
pub fn run(h: &Harness) {
    install_panic_hook();
    let s = settings(h.name);
    let _ = std::fs::create_dir_all(&s.out);
    let current_path = s.out.join("current-input.bin");
    let runner = Runner {
        h,
        current: Current::create(current_path.clone(), h.max_len.max(1 << 16)),
        watch: Arc::new(Watch { harness: h.name, current: current_path, started: AtomicU64::new(0), hang: s.hang }),
        time_limit: s.time_limit,
    };
    watch(&runner.watch);
    let mut rng = Rng::new(s.seed);
    let mut stats = Stats::default();
    let mut failures: Vec<String> = Vec::new();

    // Regression inputs first: every file in tests/fuzz_corpus/<harness>/.
    let corpus = corpus_files(h.name);
    for (path, bytes) in &corpus {
        let e = runner.exec(bytes);
        if let Some((k, d)) = e.failure {
            failures.push(format!("corpus file {}: {}: {d}", path.display(), k.tag()));
        }
    }

    let mut pool: Vec<Vec<u8>> = (h.seeds)();
    pool.extend(corpus.into_iter().map(|(_, b)| b));
    for p in pool.iter_mut() {
        p.truncate(h.max_len);
    }
    let fixed = pool.len();
    let mut seen: HashSet<u64> = HashSet::new();
    for p in pool.clone() {
        let e = runner.exec(&p);
        seen.insert(outcome_class(&e.outcome));
        if let Some((k, d)) = e.failure {
            failures.push(format!("seed input ({} bytes): {}: {d}", p.len(), k.tag()));
        }
    }

    const POOL_CAP: usize = 1024;
    // WEBDISTILL_FUZZ_DEBUG: print a sample of outcomes, to see where the inputs end up.
    let debug = std::env::var_os("WEBDISTILL_FUZZ_DEBUG").is_some();
    let t0 = Instant::now();
    let deadline = s.seconds.map(|x| t0 + Duration::from_secs_f64(x));
    let mut next_report = t0 + Duration::from_secs(30);
    loop {
        match deadline {
            Some(d) if stats.execs % 64 == 0 && Instant::now() >= d => break,
            None if stats.execs as usize >= s.execs => break,
            _ => {}
        }
        let input = make_input(&mut rng, h, &pool, fixed);
        let e = runner.exec(&input);
        stats.execs += 1;
        stats.accepted += (e.outcome.starts_with("ok") || e.outcome.contains(": ok")) as u64;
        if debug && stats.execs % 499 == 0 {
            eprintln!("fuzz: {} sample: {}", h.name, e.outcome.chars().take(200).collect::<String>());
        }
        stats.slowest = stats.slowest.max(e.time);
        stats.max_peak = stats.max_peak.max(e.peak);
        stats.max_ratio = stats.max_ratio.max(e.peak as f64 / e.bound.max(1) as f64);
        if seen.insert(outcome_class(&e.outcome)) {
            if pool.len() < POOL_CAP {
                pool.push(input.clone());
            } else {
                let i = fixed + rng.below(POOL_CAP - fixed);
                pool[i] = input.clone();
            }
        }
        if let Some((kind, detail)) = e.failure {
            *stats.counts.entry(kind).or_default() += 1;
            let key = if kind == Kind::Panic { panic_place(&detail) } else { format!("{:x}", outcome_class(&e.outcome)) };
            if stats.unique.insert((kind, key.clone())) && stats.written.len() < 40 {
                let small = if kind == Kind::OverTime { input.clone() } else { runner.shrink(&input, kind, &key, 400) };
                let detail = runner.exec(&small).failure.map(|f| f.1).unwrap_or(detail);
                let path = write_failure(&s.out, kind, &small, &detail, Some(&input));
                eprintln!("fuzz: {}: {} -> {path}\n      {detail}", h.name, kind.tag());
                stats.written.push(path);
            }
        }
        if s.long && Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "fuzz: {}: {} execs in {secs:.0} s ({:.0}/s), {} outcomes, {} failures",
                h.name,
                stats.execs,
                stats.execs as f64 / secs,
                seen.len(),
                stats.counts.values().sum::<u64>()
            );
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let c = |k| stats.counts.get(&k).copied().unwrap_or(0);
    println!(
        "FUZZ harness={} execs={} secs={secs:.1} rate={:.0}/s panics={} over_time={} over_alloc={} corpus={} accepted={:.1}% outcomes={} pool={} slowest_ms={:.1} max_peak={} max_peak_over_bound={:.3} seed=0x{:x} out={}",
        h.name,
        stats.execs,
        stats.execs as f64 / secs.max(1e-9),
        c(Kind::Panic),
        c(Kind::OverTime),
        c(Kind::OverAlloc),
        corpus_files(h.name).len(),
        100.0 * stats.accepted as f64 / stats.execs.max(1) as f64,
        seen.len(),
        pool.len(),
        stats.slowest.as_secs_f64() * 1e3,
        stats.max_peak,
        stats.max_ratio,
        s.seed,
        s.out.display()
    );
    failures.extend(stats.written.iter().map(|p| format!("found: {p}")));
    drop(runner);
    assert!(
        failures.is_empty() && stats.counts.is_empty(),
        "fuzz harness '{}' (seed 0x{:x}): {} failing input(s):\n  {}",
        h.name,
        s.seed,
        stats.counts.values().sum::<u64>() + failures.iter().filter(|f| !f.starts_with("found")).count() as u64,
        failures.join("\n  ")
    );
}

fn make_input(rng: &mut Rng, h: &Harness, pool: &[Vec<u8>], fixed: usize) -> Vec<u8> {
    if rng.below(64) == 0 {
        let n = if rng.below(2) == 0 { rng.below(64) } else { rng.below(h.max_len.min(4096) + 1) };
        return rng.bytes(n);
    }
    // A valid seed a quarter of the time, so the pool's oddities do not crowd them out.
    let base = if rng.one_in(4) { &pool[rng.below(fixed)] } else { &pool[rng.below(pool.len())] };
    let mut v = match rng.below(8) {
        0..=3 => (h.mutate)(rng, base, pool),
        4..=5 => {
            let mut v = base.clone();
            mutate::havoc(rng, &mut v, pool, h.dict, h.max_len);
            v
        }
        _ => {
            let mut v = (h.mutate)(rng, base, pool);
            mutate::havoc(rng, &mut v, pool, h.dict, h.max_len);
            v
        }
    };
    if let Some(f) = h.fixup.filter(|_| !rng.one_in(4)) {
        f(&mut v);
    }
    v.truncate(h.max_len);
    v
}

/// Run one file through a harness and print what happened (outcome, peak, bound, time):
/// `WEBDISTILL_FUZZ_REPLAY=HARNESS:FILE cargo test --test fuzz replay -- --ignored --nocapture`.
pub fn replay(harnesses: &[Harness]) {
    install_panic_hook();
    let spec = std::env::var("WEBDISTILL_FUZZ_REPLAY").expect("set WEBDISTILL_FUZZ_REPLAY=HARNESS:FILE");
    let (name, file) = spec.split_once(':').expect("HARNESS:FILE");
    let h = harnesses.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no harness '{name}'"));
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let dir = std::env::temp_dir().join(format!("webdistill-fuzz-replay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let runner = Runner {
        h,
        current: Current::create(dir.join("current-input.bin"), bytes.len().max(1 << 16)),
        watch: Arc::new(Watch { harness: h.name, current: dir.clone(), started: AtomicU64::new(0), hang: Duration::from_secs(3600) }),
        time_limit: Duration::from_secs(1),
    };
    let e = runner.exec(&bytes);
    println!(
        "replay {name} {file} ({} bytes): {:?} peak {} bound {} time {:?}\n  outcome: {}",
        bytes.len(),
        e.failure,
        e.peak,
        e.bound,
        e.time,
        e.outcome
    );
    drop(runner);
    let _ = std::fs::remove_dir_all(&dir);
}
