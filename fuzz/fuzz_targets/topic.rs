//! MQTT topic strings as the broker hands them over, parsed in a topic space. The input
//! is `namespace\ntopic` (an empty first line is the default space).
//!
//! Asserts: a namespace is accepted only as one id-like topic level, and every filter of
//! its space stays inside it (no `#`, the only wildcard is one `+` level); a topic that
//! parses formats back to exactly the same string, names an id free of MQTT wildcards,
//! separators and `$`, and does not parse in the other space (deployments stay apart).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerfleet_fuzz::split_header;
use lockerfleet_shared::topic::Filter;
use lockerfleet_shared::{Topic, TopicSpace};

fn clean_id(id: &str) {
    assert!(!id.is_empty() && id.len() <= 64);
    assert!(!id.contains(['+', '#', '/', '$']), "id {id:?} could widen a subscription");
}

fuzz_target!(|data: &[u8]| {
    let Some((ns, rest)) = split_header(data) else { return };
    let Ok(topic) = std::str::from_utf8(rest) else { return };
    let namespace = (!ns.is_empty()).then_some(ns);
    let Ok(space) = TopicSpace::new(namespace) else {
        assert!(namespace.is_some(), "the default space always exists");
        return;
    };
    if let Some(ns) = namespace {
        assert!(!ns.contains(['/', '+', '#']), "namespace {ns:?} accepted");
    }
    let prefix = space.to_string();
    for f in [Filter::AllCabinetUp, Filter::AllCabinetPresence, Filter::AllCourierAssignments] {
        let plain = space.filter(f, None).expect("a filter without a group builds");
        assert!(plain.starts_with(&prefix));
        assert!(!plain.contains('#'));
        assert_eq!(plain.matches('+').count(), 1);
        let shared = space.filter(f, Some("fleet")).expect("a valid group builds");
        assert_eq!(shared, format!("$share/fleet/{plain}"));
    }

    let Ok(parsed) = space.parse(topic) else { return };
    assert_eq!(space.format(&parsed), topic, "parse then format gives the topic back");
    match &parsed {
        Topic::CabinetUp(c) | Topic::CabinetPresence(c) | Topic::CabinetDown(c) => clean_id(c.as_str()),
        Topic::CourierAssignments(c) => clean_id(c.as_str()),
    }
    let other = match namespace {
        Some(_) => TopicSpace::default(),
        None => TopicSpace::new(Some("other")).expect("a valid namespace"),
    };
    assert!(other.parse(topic).is_err(), "{topic:?} parsed in two topic spaces");
});
