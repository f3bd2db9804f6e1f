//! Replays every checked-in fuzz corpus and regression input through the fuzz targets' own
//! checks, so that `cargo test` keeps every finding fixed without needing cargo-fuzz: the JOSE
//! core's (`crates/jose/fuzz/`, over `jwtgate-jose` alone) and the gateway's (`fuzz/`).
//! Coverage-guided runs are `fuzz/run.sh SECONDS` (README, "Security model").

#[path = "../../fuzz/fuzz_targets/checks.rs"]
mod gateway;
#[path = "../../crates/jose/fuzz/fuzz_targets/checks.rs"]
mod jose;

use std::path::Path;

fn replay(corpora: &str, target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(corpora).join("corpus").join(target);
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
    replay("crates/jose/fuzz", "jwt_decode", jose::jwt_decode);
}

#[test]
fn jwks_parse_corpus_and_regressions() {
    replay("crates/jose/fuzz", "jwks_parse", jose::jwks_parse);
}

#[test]
fn dpop_proof_corpus() {
    replay("crates/jose/fuzz", "dpop_proof", jose::dpop_proof);
}

#[test]
fn discovery_parse_corpus() {
    replay("fuzz", "discovery_parse", gateway::discovery_parse);
}

#[test]
fn match_form_corpus() {
    replay("fuzz", "match_form", gateway::match_form);
}

#[test]
fn config_parse_corpus() {
    replay("fuzz", "config_parse", gateway::config_parse);
}

#[test]
fn front_door_corpus() {
    replay("fuzz", "front_door", gateway::front_door);
}

/// Every target of both fuzz packages has a corpus here, and every corpus a target.
#[test]
fn every_fuzz_target_is_replayed() {
    for (package, replayed) in [
        ("crates/jose/fuzz", &["jwt_decode", "jwks_parse", "dpop_proof"][..]),
        ("fuzz", &["discovery_parse", "match_form", "config_parse", "front_door"][..]),
    ] {
        let manifest = std::fs::read_to_string(Path::new(package).join("Cargo.toml")).unwrap();
        let mut targets: Vec<&str> =
            manifest.lines().filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')).skip(1).collect();
        let mut corpora: Vec<String> = std::fs::read_dir(Path::new(package).join("corpus"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut replayed = replayed.to_vec();
        targets.sort_unstable();
        corpora.sort_unstable();
        replayed.sort_unstable();
        assert_eq!(targets, replayed, "{package}: the targets in Cargo.toml");
        assert_eq!(corpora, replayed, "{package}: the corpus folders");
    }
}
