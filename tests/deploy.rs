//! The deployment files stay true: the sidecar's embedded configuration passes `check-config`,
//! and every metric the Grafana dashboard queries is one jwtgate exports.
mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

#[test]
fn the_kubernetes_configmap_passes_check_config() {
    let text = std::fs::read_to_string("deploy/kubernetes/jwtgate-sidecar.yaml").unwrap();
    let mut configs = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let Some(toml) = v["data"]["jwtgate.toml"].as_str() else { continue };
        let dir = std::env::temp_dir().join(format!("jwtgate-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwtgate.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .env_remove("JWTGATE_CONFIG")
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        configs += 1;
    }
    assert_eq!(configs, 1, "the manifest carries one jwtgate.toml");
}

/// The `jwtgate_*` metric families a PromQL expression names (histogram series mapped to their
/// family).
fn families(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("jwtgate_") {
        let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let family = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        out.insert(family.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_on_the_dashboard_is_exported() {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string("deploy/grafana/jwtgate.json").unwrap()).unwrap();
    let mut wanted = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            wanted.extend(families(target["expr"].as_str().unwrap()));
        }
    }
    assert!(wanted.len() >= 10, "{wanted:?}");
    let h = Harness::start().await;
    echoed(h.get_with("/api/x", &h.token("")).await).await;
    // Rejections are labelled by issuer and reason: their series appear with the first one.
    assert_eq!(h.get_with("/api/x", "not-a-jwt").await.status(), 401);
    let text = h.metrics().await;
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics jwtgate does not export: {missing:?}");
    assert!(exported.contains("jwtgate_build_info"));
    assert!(text.contains(&format!("jwtgate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
}
