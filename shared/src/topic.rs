//! MQTT topics: the only place in the workspace where a topic string is spelled.
//!
//! ```text
//!   {ns/}lf/v1/cab/{cabinet}/up          edge → server   hello, state, events, ota, applied
//!   {ns/}lf/v1/cab/{cabinet}/presence    edge → server   online / offline (retained, last will)
//!   {ns/}lf/v1/cab/{cabinet}/down        server → edge   ack, templates, parcels, ota, cmd
//!   {ns/}lf/v1/courier/{courier}/assignments             server → courier
//! ```
//!
//! A [`TopicSpace`] may carry a namespace prefix so that several deployments (staging and
//! production, or parallel test runs) can share one broker without seeing each other's
//! traffic. Every other crate builds and parses topics through it.

use std::fmt;

use crate::ids::{CabinetId, CourierId, IdError};

/// The protocol root; bumped only with an incompatible topic layout.
pub const ROOT: &str = "lf/v1";

/// Why a topic string is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is outside this deployment's topic space")]
    Foreign(String),
    #[error("topic {0:?} does not follow the lf/v1 layout")]
    Layout(String),
    #[error("topic {topic:?} names an invalid id: {source}")]
    BadId {
        topic: String,
        #[source]
        source: IdError,
    },
    #[error("namespace {0:?} is invalid: use 1-64 characters of letters, digits, '-', '_', '.'")]
    BadNamespace(String),
    #[error("shared subscription group {0:?} is invalid: use 1-64 characters of letters, digits, '-', '_', '.'")]
    BadGroup(String),
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    CabinetUp(CabinetId),
    CabinetPresence(CabinetId),
    CabinetDown(CabinetId),
    CourierAssignments(CourierId),
}

impl Topic {
    /// The cabinet this topic belongs to, if it is a cabinet topic.
    pub fn cabinet(&self) -> Option<&CabinetId> {
        match self {
            Topic::CabinetUp(c) | Topic::CabinetPresence(c) | Topic::CabinetDown(c) => Some(c),
            Topic::CourierAssignments(_) => None,
        }
    }
}

/// Wildcard subscriptions the fleet-server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every cabinet's `up` topic.
    AllCabinetUp,
    /// Every cabinet's `presence` topic.
    AllCabinetPresence,
    /// Every courier's `assignments` topic (each replica needs all of them for its own
    /// server-sent-event clients, so never subscribe to it through a shared group).
    AllCourierAssignments,
}

/// Builds and parses topics within one deployment's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicSpace {
    /// `""` for the default space, else `"{namespace}/"`: kept with its slash so that
    /// building a topic is one concatenation.
    prefix: String,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TopicSpace {
    /// A topic space, optionally under `namespace` (one topic level, id-like characters).
    pub fn new(namespace: Option<&str>) -> Result<Self, TopicError> {
        match namespace {
            None => Ok(Self::default()),
            Some(ns) if valid_segment(ns) => Ok(Self { prefix: format!("{ns}/") }),
            Some(ns) => Err(TopicError::BadNamespace(ns.to_owned())),
        }
    }

    pub fn cabinet_up(&self, cabinet: &CabinetId) -> String {
        format!("{}{ROOT}/cab/{cabinet}/up", self.prefix)
    }

    pub fn cabinet_presence(&self, cabinet: &CabinetId) -> String {
        format!("{}{ROOT}/cab/{cabinet}/presence", self.prefix)
    }

    pub fn cabinet_down(&self, cabinet: &CabinetId) -> String {
        format!("{}{ROOT}/cab/{cabinet}/down", self.prefix)
    }

    pub fn courier_assignments(&self, courier: &CourierId) -> String {
        format!("{}{ROOT}/courier/{courier}/assignments", self.prefix)
    }

    /// The string form of a parsed topic.
    pub fn format(&self, topic: &Topic) -> String {
        match topic {
            Topic::CabinetUp(c) => self.cabinet_up(c),
            Topic::CabinetPresence(c) => self.cabinet_presence(c),
            Topic::CabinetDown(c) => self.cabinet_down(c),
            Topic::CourierAssignments(c) => self.courier_assignments(c),
        }
    }

    /// A wildcard filter, optionally as an MQTT shared subscription
    /// (`$share/{group}/{filter}`) so that each message reaches one of several replicas.
    pub fn filter(&self, filter: Filter, shared_group: Option<&str>) -> Result<String, TopicError> {
        let plain = match filter {
            Filter::AllCabinetUp => format!("{}{ROOT}/cab/+/up", self.prefix),
            Filter::AllCabinetPresence => format!("{}{ROOT}/cab/+/presence", self.prefix),
            Filter::AllCourierAssignments => format!("{}{ROOT}/courier/+/assignments", self.prefix),
        };
        match shared_group {
            None => Ok(plain),
            Some(g) if valid_segment(g) => Ok(format!("$share/{g}/{plain}")),
            Some(g) => Err(TopicError::BadGroup(g.to_owned())),
        }
    }

    /// Parses a topic of this space.
    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|t| t.strip_prefix(ROOT))
            .and_then(|t| t.strip_prefix('/'))
            .ok_or_else(|| TopicError::Foreign(topic.to_owned()))?;
        let mut parts = rest.split('/');
        let (Some(kind), Some(id), Some(leaf), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TopicError::Layout(topic.to_owned()));
        };
        let bad_id = |source| TopicError::BadId { topic: topic.to_owned(), source };
        match (kind, leaf) {
            ("cab", "up" | "presence" | "down") => {
                let cabinet = CabinetId::new(id).map_err(bad_id)?;
                Ok(match leaf {
                    "up" => Topic::CabinetUp(cabinet),
                    "presence" => Topic::CabinetPresence(cabinet),
                    _ => Topic::CabinetDown(cabinet),
                })
            }
            ("courier", "assignments") => Ok(Topic::CourierAssignments(CourierId::new(id).map_err(bad_id)?)),
            _ => Err(TopicError::Layout(topic.to_owned())),
        }
    }
}

impl fmt::Display for TopicSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{ROOT}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cab(s: &str) -> CabinetId {
        CabinetId::new(s).unwrap()
    }

    #[test]
    fn topics_are_spelled_as_the_design_says() {
        let ts = TopicSpace::default();
        assert_eq!(ts.cabinet_up(&cab("c1")), "lf/v1/cab/c1/up");
        assert_eq!(ts.cabinet_presence(&cab("c1")), "lf/v1/cab/c1/presence");
        assert_eq!(ts.cabinet_down(&cab("c1")), "lf/v1/cab/c1/down");
        assert_eq!(ts.courier_assignments(&CourierId::new("k9").unwrap()), "lf/v1/courier/k9/assignments");
        assert_eq!(ts.filter(Filter::AllCabinetUp, Some("fleet")).unwrap(), "$share/fleet/lf/v1/cab/+/up");
        assert_eq!(ts.filter(Filter::AllCabinetPresence, None).unwrap(), "lf/v1/cab/+/presence");
    }

    #[test]
    fn namespaces_keep_deployments_apart() {
        let staging = TopicSpace::new(Some("staging")).unwrap();
        let prod = TopicSpace::default();
        let t = staging.cabinet_up(&cab("c1"));
        assert_eq!(t, "staging/lf/v1/cab/c1/up");
        assert_eq!(staging.parse(&t).unwrap(), Topic::CabinetUp(cab("c1")));
        assert!(matches!(prod.parse(&t), Err(TopicError::Foreign(_))));
        assert!(matches!(TopicSpace::new(Some("a/b")), Err(TopicError::BadNamespace(_))));
    }

    #[test]
    fn malformed_topics_are_refused() {
        let ts = TopicSpace::default();
        assert!(matches!(ts.parse("lf/v1/cab/c1"), Err(TopicError::Layout(_))));
        assert!(matches!(ts.parse("lf/v1/cab/c1/up/x"), Err(TopicError::Layout(_))));
        assert!(matches!(ts.parse("lf/v1/cab/c1/sideways"), Err(TopicError::Layout(_))));
        assert!(matches!(ts.parse("lf/v2/cab/c1/up"), Err(TopicError::Foreign(_))));
        assert!(matches!(ts.parse("lf/v1/cab/+/up"), Err(TopicError::BadId { .. })));
        assert!(matches!(ts.filter(Filter::AllCabinetUp, Some("a+b")), Err(TopicError::BadGroup(_))));
    }

    proptest! {
        #[test]
        fn every_topic_round_trips(
            id in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
            ns in proptest::option::of("[A-Za-z0-9_.-]{1,10}"),
            which in 0u8..4,
        ) {
            let ts = TopicSpace::new(ns.as_deref()).unwrap();
            let topic = match which {
                0 => Topic::CabinetUp(CabinetId::new(id.clone()).unwrap()),
                1 => Topic::CabinetPresence(CabinetId::new(id.clone()).unwrap()),
                2 => Topic::CabinetDown(CabinetId::new(id.clone()).unwrap()),
                _ => Topic::CourierAssignments(CourierId::new(id.clone()).unwrap()),
            };
            prop_assert_eq!(ts.parse(&ts.format(&topic)).unwrap(), topic);
        }
    }
}
