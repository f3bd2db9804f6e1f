//! Replays every checked-in fuzz corpus and regression input (`fuzz/corpus/<target>/`)
//! through the fuzz targets' own checks (`fuzz/fuzz_targets/checks.rs`), so that `cargo test`
//! keeps every finding fixed without needing cargo-fuzz. Coverage-guided runs are
//! `fuzz/run.sh SECONDS` (README, "Security model").

#[path = "../../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn jwt_decode_corpus() {
    replay("jwt_decode", checks::jwt_decode);
}

#[test]
fn jwks_parse_corpus_and_regressions() {
    replay("jwks_parse", checks::jwks_parse);
}

#[test]
fn discovery_parse_corpus() {
    replay("discovery_parse", checks::discovery_parse);
}

#[test]
fn match_form_corpus() {
    replay("match_form", checks::match_form);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", checks::config_parse);
}

#[test]
fn dpop_verify_corpus() {
    replay("dpop_verify", checks::dpop_verify);
}
