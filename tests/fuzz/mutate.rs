//! Generic mutations (the format-blind "havoc" stage) and the random source.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic random source (ChaCha8, seeded and printed by the engine).
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.u64() as u128 * n as u128) >> 64) as usize
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
    /// Up to `max` random bytes.
    pub fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        self.bytes(n)
    }
    /// A length that is usually small and sometimes not.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.below(4.min(max) + 1),
            1 | 2 => self.below(32.min(max) + 1),
            _ => self.below(max + 1),
        }
    }
    /// An integer boundary value, sometimes off by one.
    pub fn interesting(&mut self) -> u64 {
        let v = *self.pick(INTERESTING);
        match self.below(6) {
            0 => v.wrapping_add(1),
            1 => v.wrapping_sub(1),
            _ => v,
        }
    }
    /// A small count, or now and then a boundary value.
    pub fn dim(&mut self) -> u64 {
        if self.one_in(3) { self.interesting() } else { self.below(9) as u64 }
    }
}

/// Boundary values for sizes, counts, lengths and offsets.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    10,
    16,
    20,
    32,
    64,
    100,
    127,
    128,
    255,
    256,
    1000,
    1024,
    3072,
    3073,
    3074,
    4096,
    16384,
    32767,
    32768,
    65535,
    65536,
    100_000,
    1 << 20,
    (1 << 24) + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 53,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

const BYTES: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 0xfe, b' ', b'0', b'9', b'\n', b'"', b'\''];

/// 1 to 8 random format-blind edits of `data` (bit flips, byte sets, boundary integers of 2,
/// 4 and 8 bytes either endian, truncation, extension, deletion, duplication, runs,
/// splicing with other inputs of the pool, tokens of the harness's dictionary, numbers in text).
pub fn havoc(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]], max_len: usize) {
    let n = 1 << rng.below(4);
    for _ in 0..n {
        one(rng, data, pool, dict, max_len);
        if data.len() > max_len {
            data.truncate(max_len);
        }
    }
}

fn pos(rng: &mut Rng, data: &[u8]) -> usize {
    rng.below(data.len() + 1)
}

pub fn write_int(data: &mut [u8], at: usize, v: u64, width: usize, big_endian: bool) {
    for i in 0..width {
        let shift = if big_endian { 8 * (width - 1 - i) } else { 8 * i };
        if let Some(b) = data.get_mut(at + i) {
            *b = (v >> shift) as u8;
        }
    }
}

fn one(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]], max_len: usize) {
    let empty = data.is_empty();
    match rng.below(17) {
        0 if !empty => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !empty => {
            let i = rng.below(data.len());
            data[i] = rng.u64() as u8;
        }
        2 if !empty => {
            let i = rng.below(data.len());
            data[i] = *rng.pick(BYTES);
        }
        3 if !empty => {
            let i = rng.below(data.len());
            let d = 1 + rng.below(35) as u8;
            data[i] = if rng.one_in(2) { data[i].wrapping_add(d) } else { data[i].wrapping_sub(d) };
        }
        4..=6 if !empty => {
            let width = [2, 4, 8][rng.below(3)];
            let at = rng.below(data.len());
            let v = rng.interesting();
            let be = rng.one_in(2);
            write_int(data, at, v, width, be);
        }
        7 => {
            let at = pos(rng, data);
            data.truncate(at);
        }
        8 if !empty => {
            let at = rng.below(data.len());
            let n = rng.len(data.len() - at);
            data.drain(at..at + n);
        }
        9 => {
            let at = pos(rng, data);
            let n = rng.len(1024);
            let b = if rng.one_in(2) { rng.bytes(n) } else { vec![0; n] };
            data.splice(at..at, b);
        }
        10 => {
            // A run of one byte (deep nesting, long numbers, a zero page).
            let at = pos(rng, data);
            let max = if rng.one_in(8) { 1 << 16 } else { 256 };
            let n = rng.len(max);
            let b = if !dict.is_empty() && rng.one_in(2) {
                let t = rng.pick(dict);
                t.first().copied().unwrap_or(0)
            } else {
                *rng.pick(BYTES)
            };
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        11 if !empty => {
            let from = rng.below(data.len());
            let n = rng.len(data.len() - from).max(1);
            let chunk = data[from..from + n].to_vec();
            let at = pos(rng, data);
            let times = if rng.one_in(8) { 1 + rng.below(64) } else { 1 };
            for _ in 0..times {
                if data.len() + chunk.len() > max_len {
                    break;
                }
                data.splice(at..at, chunk.iter().copied());
            }
        }
        12 if !pool.is_empty() => {
            // Splice: a prefix of this input, a suffix of another.
            let other = &pool[rng.below(pool.len())];
            let a = pos(rng, data);
            let b = rng.below(other.len() + 1);
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        13 if !pool.is_empty() && !empty => {
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = rng.len(other.len() - from);
                let at = rng.below(data.len());
                for (i, &b) in other[from..from + n].iter().enumerate() {
                    if let Some(d) = data.get_mut(at + i) {
                        *d = b;
                    }
                }
            }
        }
        14 if !dict.is_empty() => {
            let t = *rng.pick(dict);
            let at = pos(rng, data);
            let times = if rng.one_in(16) { 1 + rng.below(2000) } else { 1 };
            let mut ins = Vec::with_capacity(t.len() * times);
            for _ in 0..times {
                ins.extend_from_slice(t);
            }
            data.splice(at..at, ins);
        }
        15 if !dict.is_empty() && !empty => {
            let t = *rng.pick(dict);
            let at = rng.below(data.len());
            let end = (at + t.len()).min(data.len());
            data.splice(at..end, t.iter().copied());
        }
        16 => {
            // Replace a decimal number in text by a boundary value (or add one).
            let starts: Vec<usize> =
                (0..data.len()).filter(|&i| data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())).collect();
            let text = number_text(rng);
            if starts.is_empty() {
                let at = pos(rng, data);
                data.splice(at..at, text.into_bytes());
            } else {
                let a = *rng.pick(&starts);
                let mut b = a;
                while b < data.len() && (data[b].is_ascii_digit() || data[b] == b'.') {
                    b += 1;
                }
                data.splice(a..b, text.into_bytes());
            }
        }
        _ => {
            let at = pos(rng, data);
            let b = rng.u64() as u8;
            data.insert(at, b);
        }
    }
}

/// A number as text: boundary integers, negative, huge, fractional, exponents, special.
pub fn number_text(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!("-{}", rng.interesting()),
        1 => format!("{}.5", rng.interesting()),
        2 => ["1e309", "-1e309", "1e39", "3.4028235e38", "1e-46", "-0", "0.0", "-0.0", "nan", "inf", "-inf", "NaN", "Infinity"]
            [rng.below(13)]
        .to_string(),
        3 => "18446744073709551616".to_string(),
        4 => "9".repeat(1 + rng.below(400)),
        5 => format!("{}e{}", rng.below(10), rng.below(400)),
        _ => rng.interesting().to_string(),
    }
}
