//! Writes `BALLAST_FUNCTIONS` (default 0) distinct functions, each exported so that no
//! optimisation drops them, each about 450 bytes of wasm: loops, branches, 64-bit arithmetic
//! and memory accesses, the kind of code a filter is made of.

use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-env-changed=BALLAST_FUNCTIONS");
    let n: u64 = std::env::var("BALLAST_FUNCTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut out = String::new();
    for i in 0..n {
        let a = (i.wrapping_mul(2_654_435_761) % (1 << 32)) | 1;
        let b = ((i * 40_503 + 7) % (1 << 31)) | 1;
        let c = (i * 97 + 13) % 61 + 1;
        let mut body = String::new();
        for (round, (rot, mul, shift)) in [(c % 63 + 1, b, i % 40), ((c + 5) % 63 + 1, b ^ 0x5bd1_e995, (i + 11) % 40)]
            .into_iter()
            .enumerate()
        {
            let _ = write!(
                body,
                "
    for (k, v) in s.iter_mut().enumerate() {{
        h = h.rotate_left({rot}).wrapping_mul({mul}) ^ (*v >> {sr});
        if h & {bit} != 0 {{ *v = v.wrapping_add(h ^ (k as u64).wrapping_add({a})); }} else {{ *v ^= h.wrapping_sub({mul}); }}
        match (h >> {shift}) % 5 {{
            0 => h = h.wrapping_add(n as u64 * {c}),
            1 => h ^= h >> {x},
            2 => h = h.wrapping_mul({a} | 1),
            3 => h = h.rotate_right({y}),
            _ => h = h.wrapping_sub(k as u64 ^ {mul}),
        }}
    }}",
                sr = c % 31 + 1 + round as u64,
                bit = 1u64 << (i % 17),
                x = c % 29 + 3,
                y = (c * 7) % 63 + 1,
            );
        }
        let _ = write!(
            out,
            "#[no_mangle]
pub extern \"C\" fn ballast_{i}(p: *mut u64, n: usize, x: u64) -> u64 {{
    // SAFETY: never called; exported only to be compiled.
    let s = unsafe {{ core::slice::from_raw_parts_mut(p, n) }};
    let mut h = x ^ {a};{body}
    h
}}
"
        );
    }
    let dir = std::env::var("OUT_DIR").unwrap_or_default();
    let _ = std::fs::write(std::path::Path::new(&dir).join("ballast.rs"), out);
}
