//! Replays, in plain `cargo test`, every committed fuzz seed (`fuzz/corpus/<target>/`) and every
//! input a fuzzer found (`fuzz/regressions/<target>/`) through the property checks of
//! `fuzz/checks.rs`. `bash scripts/fuzz.sh` runs the fuzzers themselves.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::path::Path;

#[test]
fn every_seed_and_found_input_passes_its_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let mut seeds = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = fs::read(entry.path()).unwrap();
                check(&data);
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no seed committed for fuzz target {target}");
        replayed += seeds;
    }
    assert!(replayed >= checks::TARGETS.len());
}

/// The DPoP seeds the fuzzer mutates are valid proofs (so its property is not vacuous): each
/// passes every check, and fails once one byte of its signed part changes.
#[test]
fn the_dpop_seeds_are_valid_proofs() {
    use envoy_token_filter::token::dpop::{self, Expect};
    use envoy_token_filter::token::jws::Alg;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dpop_proof");
    let expect = Expect {
        algorithms: &[Alg::Es256, Alg::EdDsa],
        method: "POST",
        htu: "https://api.example.com/orders/1",
        token: "tok",
        now_s: 1_900_000_000,
        max_age_s: 300,
        clock_skew_s: 5,
        nonce: None,
    };
    for seed in ["seed-00", "seed-01"] {
        let proof = fs::read_to_string(dir.join(seed)).unwrap();
        assert!(dpop::verify(&proof, &expect).is_ok(), "{seed}");
        let mut changed = proof.into_bytes();
        changed[10] ^= 1;
        let changed = String::from_utf8(changed).unwrap();
        assert!(dpop::verify(&changed, &expect).is_err(), "{seed}");
    }
}
