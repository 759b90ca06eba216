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
