//! The dashboards and alert rules in `dashboards/` use only metrics this server exports.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;

/// Every `lockerfleet_*` or `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["lockerfleet_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end =
                tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
            if before_ok {
                names.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn every_metric_a_dashboard_or_alert_uses_is_exported() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // What the server exports: the names registered in metrics.rs (labelled counters are
    // absent from /metrics until first incremented) and the process collector's output.
    let mut exported = metric_names(&std::fs::read_to_string(root.join("fleet-server/src/metrics.rs")).unwrap());
    exported.extend(metric_names(&fleet_server::metrics::Metrics::new().render()));
    exported.extend(metric_names(&std::fs::read_to_string(root.join("edge-agent/src/http.rs")).unwrap()));
    // Every dashboard in the folder, the rules and the rules' unit tests.
    let mut files: Vec<String> = std::fs::read_dir(root.join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .map(|n| format!("dashboards/{n}"))
        .collect();
    files.sort();
    for expected in ["fleet-overview", "pipeline", "pickups", "templates", "couriers", "rollouts", "edge-health"] {
        let f = format!("dashboards/{expected}.json");
        assert!(files.contains(&f), "{f} is missing");
    }
    files.extend(["dashboards/alerts.yml".to_owned(), "dashboards/alerts.test.yml".to_owned()]);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        }
        for name in metric_names(&text) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(*b))
                .unwrap_or(&name);
            assert!(exported.contains(base), "{file} uses {name}, which the code does not export");
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} metric references found; did the dashboards move?");
}
