//! Who may publish and subscribe what on the embedded broker: a pure function of the
//! login and the topic, the same rule the shipped Mosquitto ACL (`deploy/mosquitto/`)
//! writes down for external brokers.
//!
//! | login | publish | subscribe |
//! |---|---|---|
//! | cabinet `c` | `…/cab/c/up`, `…/cab/c/presence` (also as its last will) | `…/cab/c/down`, exactly |
//! | courier `k` | nothing | `…/courier/k/assignments`, exactly |
//!
//! Everything else — another owner's topic, a wildcard, `$share/…`, `$SYS/…`, a topic
//! outside the deployment's namespace — is refused. The server's own clients do not pass
//! through here: they connect to rumqttd's internal port.

use lockerfleet_shared::{Topic, TopicSpace};

use super::credentials::Principal;

/// Why a packet was refused; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The topic is of a kind the login may use, but belongs to another cabinet or courier.
    OtherOwner,
    /// The topic is not one this kind of login may use at all (or not one of ours).
    NotPermitted,
}

impl Denial {
    pub fn label(self) -> &'static str {
        match self {
            Denial::OtherOwner => "other_owner",
            Denial::NotPermitted => "not_permitted",
        }
    }
}

/// May `who` publish on `topic`?
pub fn may_publish(who: &Principal, topics: &TopicSpace, topic: &str) -> Result<(), Denial> {
    let parsed = topics.parse(topic).map_err(|_| Denial::NotPermitted)?;
    match (who, &parsed) {
        (Principal::Cabinet(me), Topic::CabinetUp(c) | Topic::CabinetPresence(c)) => {
            if me == c {
                Ok(())
            } else {
                Err(Denial::OtherOwner)
            }
        }
        _ => Err(Denial::NotPermitted),
    }
}

/// May `who` subscribe to `filter`? Only exact topics are granted, never wildcards.
pub fn may_subscribe(who: &Principal, topics: &TopicSpace, filter: &str) -> Result<(), Denial> {
    // A wildcard level (`+`, `#`) is not a valid id, so it never parses as a topic.
    let parsed = topics.parse(filter).map_err(|_| Denial::NotPermitted)?;
    match (who, &parsed) {
        (Principal::Cabinet(me), Topic::CabinetDown(c)) => {
            if me == c {
                Ok(())
            } else {
                Err(Denial::OtherOwner)
            }
        }
        (Principal::Courier(me), Topic::CourierAssignments(k)) => {
            if me == k {
                Ok(())
            } else {
                Err(Denial::OtherOwner)
            }
        }
        _ => Err(Denial::NotPermitted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerfleet_shared::{CabinetId, CourierId};

    fn cab(id: &str) -> Principal {
        Principal::Cabinet(CabinetId::new(id).unwrap())
    }

    #[test]
    fn a_cabinet_uses_only_its_own_topics() {
        let ts = TopicSpace::default();
        let a = cab("cab-a");
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-a/up"), Ok(()));
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-a/presence"), Ok(()));
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-b/up"), Err(Denial::OtherOwner));
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-b/presence"), Err(Denial::OtherOwner));
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-a/down"), Err(Denial::NotPermitted));
        assert_eq!(may_publish(&a, &ts, "lf/v1/courier/k-1/assignments"), Err(Denial::NotPermitted));
        assert_eq!(may_subscribe(&a, &ts, "lf/v1/cab/cab-a/down"), Ok(()));
        assert_eq!(may_subscribe(&a, &ts, "lf/v1/cab/cab-b/down"), Err(Denial::OtherOwner));
        for filter in ["lf/v1/cab/+/down", "lf/v1/#", "#", "$share/g/lf/v1/cab/+/up", "$SYS/#", "lf/v1/cab/cab-a/up"] {
            assert_eq!(may_subscribe(&a, &ts, filter), Err(Denial::NotPermitted), "{filter}");
        }
    }

    #[test]
    fn a_courier_only_listens_to_its_own_assignments() {
        let ts = TopicSpace::default();
        let k = Principal::Courier(CourierId::new("k-1").unwrap());
        assert_eq!(may_subscribe(&k, &ts, "lf/v1/courier/k-1/assignments"), Ok(()));
        assert_eq!(may_subscribe(&k, &ts, "lf/v1/courier/k-2/assignments"), Err(Denial::OtherOwner));
        assert_eq!(may_subscribe(&k, &ts, "lf/v1/courier/+/assignments"), Err(Denial::NotPermitted));
        assert_eq!(may_publish(&k, &ts, "lf/v1/courier/k-1/assignments"), Err(Denial::NotPermitted));
        assert_eq!(may_publish(&k, &ts, "lf/v1/cab/k-1/up"), Err(Denial::NotPermitted));
    }

    #[test]
    fn a_namespace_confines_too() {
        let ts = TopicSpace::new(Some("prod")).unwrap();
        let a = cab("cab-a");
        assert_eq!(may_publish(&a, &ts, "prod/lf/v1/cab/cab-a/up"), Ok(()));
        assert_eq!(may_publish(&a, &ts, "lf/v1/cab/cab-a/up"), Err(Denial::NotPermitted));
        assert_eq!(may_subscribe(&a, &ts, "staging/lf/v1/cab/cab-a/down"), Err(Denial::NotPermitted));
    }
}
