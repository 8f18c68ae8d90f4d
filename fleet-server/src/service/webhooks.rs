//! Webhook targets: only public addresses, unless the deployment allows private ones.
//!
//! A tenant admin chooses the URL the server POSTs to, from inside the operator's
//! network. Without a check that is a server-side request forgery: a URL naming a
//! loopback, private, link-local (cloud metadata at 169.254.169.254) or otherwise
//! internal address would make the server call services it can reach and the tenant
//! cannot. Checked when the URL is set (IP literals and `localhost`) and again at every
//! delivery on the resolved addresses (a name may resolve differently later).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("is not an http(s) URL with a host")]
    NotHttp,
    #[error("names a non-public address ({0}); set webhooks.allow_private_targets to allow it")]
    Private(String),
    #[error("host {0:?} does not resolve")]
    Unresolvable(String),
}

/// The host and port of an http(s) URL.
pub fn host_port(url: &str) -> Result<(String, u16), TargetError> {
    let uri: awc::http::Uri = url.parse().map_err(|_| TargetError::NotHttp)?;
    let default = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(TargetError::NotHttp),
    };
    let host = uri.host().ok_or(TargetError::NotHttp)?.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, uri.port_u16().unwrap_or(default)))
}

/// The check when a URL is set: no private IP literal, no `localhost`.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let (host, _) = host_port(url)?;
    if allow_private {
        return Ok(());
    }
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return Err(TargetError::Private(host));
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if !is_public(ip) => Err(TargetError::Private(ip.to_string())),
        _ => Ok(()),
    }
}

/// The check at delivery: every address the name resolves to now must be public.
pub async fn check_resolved(url: &str, allow_private: bool) -> Result<(), TargetError> {
    check_url(url, allow_private)?;
    if allow_private {
        return Ok(());
    }
    let (host, port) = host_port(url)?;
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| TargetError::Unresolvable(host.clone()))?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable(host));
    }
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(TargetError::Private(a.ip().to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_host() {
        assert_eq!(check_url("ftp://example.com/x", false), Err(TargetError::NotHttp));
        assert_eq!(check_url("not a url", false), Err(TargetError::NotHttp));
        assert!(matches!(check_url("http://169.254.169.254/latest", false), Err(TargetError::Private(_))));
        assert!(matches!(check_url("http://[::1]:8080/", false), Err(TargetError::Private(_))));
        assert!(matches!(check_url("http://localhost/", false), Err(TargetError::Private(_))));
        assert!(check_url("https://hooks.example.com/lf", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
    }

    #[actix_rt::test]
    async fn delivery_checks_what_a_name_resolves_to() {
        assert!(matches!(check_resolved("http://localhost:9/x", false).await, Err(TargetError::Private(_))));
        assert!(check_resolved("http://localhost:9/x", true).await.is_ok());
    }
}
