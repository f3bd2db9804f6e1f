//! Issue 19, the house: the gateway crate's modules form no import cycle (the crates below it
//! cannot — Cargo refuses one — but modules inside one crate can, and did: nine of them in one
//! knot). A module's imports are the `crate::<module>` paths in its code, comments left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let names = graph.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if !name.is_empty() && name != top {
                        names.insert(name);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn the_gateway_modules_form_no_import_cycle() {
    let graph = imports(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    assert!(graph.contains_key("decision") && graph.contains_key("serve"), "{graph:?}");
    // A path from `to` back to `from` closes a cycle through the edge `from -> to`.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                todo.extend(graph.get(&m).into_iter().flatten().filter(|n| graph.contains_key(*n)).cloned());
            }
        }
        false
    };
    let mut cycles = Vec::new();
    for (from, names) in &graph {
        for to in names.iter().filter(|n| graph.contains_key(*n)) {
            if reaches(to, from) {
                cycles.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(cycles.is_empty(), "edges on an import cycle: {cycles:?}");
}
