//! `docs/grafana-dashboard.json` against the code: every metric its
//! expressions use is one the code registers, and every metric the code
//! registers is charted. The registered names are read from the sources
//! at test time (the string literals `"pingora_..."` in the crates' `src`
//! trees, which is where the metrics are registered).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Every `expr` in the dashboard, rows' nested panels included.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers that start with
/// `pingora_`, or that a label matcher `{` follows.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    // Skip quoted strings (label values, which may hold anything).
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("pingora_") || b.get(i) == Some(&b'{') {
                names.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The `"pingora_..."` string literals in the `.rs` files under `dir`.
fn registered(dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            registered(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"pingora_").skip(1) {
                let end = piece
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(piece.len());
                if piece[end..].starts_with('"') {
                    out.insert(format!("pingora_{}", &piece[..end]));
                }
            }
        }
    }
}

#[test]
fn dashboard_uses_only_registered_metrics_and_charts_them_all() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut known = BTreeSet::new();
    for e in std::fs::read_dir(root).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("pingora-") && dir.join("src").is_dir() {
            registered(&dir.join("src"), &mut known);
        }
    }
    // The metrics the issue asks for, at least, are found in the sources.
    for m in [
        "pingora_downstream_connections_open",
        "pingora_upstream_pool_misses_total",
        "pingora_backend_healthy",
        "pingora_http_request_duration_seconds",
    ] {
        assert!(known.contains(m), "{m} not found in the sources: {known:?}");
    }

    let text = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() > 10, "{all:?}");
    let mut used = BTreeSet::new();
    for expr in &all {
        for name in metric_names(expr) {
            // A histogram is queried through its series.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| known.contains(*b)))
                .unwrap_or(&name)
                .to_string();
            assert!(
                known.contains(&base),
                "the dashboard uses {name}, which no code registers: {expr}"
            );
            used.insert(base);
        }
    }
    let uncharted: Vec<_> = known.difference(&used).collect();
    assert!(uncharted.is_empty(), "not charted: {uncharted:?}");

    // Pool misses have a panel of their own.
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(
        panels.iter().any(|p| {
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            !targets.is_empty()
                && targets.iter().any(|t| {
                    t["expr"]
                        .as_str()
                        .is_some_and(|e| e.contains("pingora_upstream_pool_misses_total"))
                })
                && !targets
                    .iter()
                    .any(|t| t["expr"].as_str().is_some_and(|e| e.contains(" / ")))
        }),
        "a panel charting pool misses as such (not only in a ratio)"
    );
    // Grid positions do not overlap.
    let mut cells = BTreeSet::new();
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{}", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps at {cx},{cy}",
                    p["title"]
                );
            }
        }
    }
}

#[test]
fn metric_names_in_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(pingora_x_bucket{instance=~"$instance", a="b{c"}[5m])) / other_metric{a="1"} or vector(0)"#
        ),
        ["pingora_x_bucket", "other_metric"]
    );
}
