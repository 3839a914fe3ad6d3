//! The client's address, as PocketBase's `RealIP` finds it, and the superuser allowlist
//! (`superuserIPs`) check.
//!
//! The address is the socket's, unless `trustedProxy.headers` names headers that a proxy in
//! front sets **and** the socket's peer is one of `trustedProxy.sources` (the gateway's
//! addition: PocketBase believes the headers from any peer, so a client that reaches the
//! port directly can name any address; with no sources the headers are believed from every
//! peer, as in PocketBase, and the start logs a warning). Then the first of the headers that
//! the request carries gives it (its last occurrence, which the proxy controls): its
//! rightmost value, or its leftmost with `useLeftmostIP`. Unlike PocketBase, which skips
//! values that do not parse and takes the next one, a value that does not parse ends the
//! walk and the socket's address is used: the next value to the left is the client's own.
//! IPv6 addresses are written out in full, as PocketBase writes them.

use crate::settings::TrustedProxy;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The socket's peer, which [`crate::api::serve`] puts on every request.
pub fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

/// PocketBase's `RealIP` with the gateway's changes (see the module docs); "" when there is
/// neither a usable header nor a socket address.
pub fn real_ip(headers: &HeaderMap, peer: Option<SocketAddr>, proxy: &TrustedProxy) -> String {
    let socket = || peer.map(|p| expanded(p.ip())).unwrap_or_default();
    if !proxy.sources.is_empty()
        && !peer.is_some_and(|p| allowed(&proxy.sources, &p.ip().to_string()))
    {
        return socket();
    }
    for name in &proxy.headers {
        let Some(last) = headers.get_all(name.as_str()).iter().next_back() else {
            continue;
        };
        let Ok(list) = last.to_str() else {
            return socket();
        };
        if list.is_empty() {
            continue;
        }
        let value = if proxy.use_leftmost_ip {
            list.split(',').next()
        } else {
            list.split(',').next_back()
        };
        return match value.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
            Some(ip) => expanded(ip),
            None => socket(),
        };
    }
    socket()
}

/// Whether `proxy` believes its headers from every peer (no `sources`): worth a warning.
pub fn trusts_every_peer(proxy: &TrustedProxy) -> bool {
    !proxy.headers.is_empty() && proxy.sources.is_empty()
}

/// Go's `netip.Addr.StringExpanded`: IPv6 as eight groups of four hex digits.
fn expanded(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

/// PocketBase's `isIPInList`: `ip` is one of the addresses or inside one of the subnets.
pub fn allowed(list: &[String], ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    list.iter()
        .filter_map(|item| crate::settings::parse_ip_or_subnet(item))
        .any(|net| net.contains(&ip))
}

/// Whether a superuser acting from this request's address is allowed: always when the
/// allowlist is empty.
pub fn superuser_allowed(
    settings: &crate::settings::Settings,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> bool {
    settings.superuser_ips.is_empty()
        || allowed(
            &settings.superuser_ips,
            &real_ip(headers, peer, &settings.trusted_proxy),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_address_comes_from_the_trusted_header_or_the_socket() {
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        let mut h = HeaderMap::new();
        h.append(
            "x-real-ip",
            HeaderValue::from_static("10.0.0.7, bogus, 1.1.1.1"),
        );
        let none = TrustedProxy::default();
        assert_eq!(real_ip(&h, peer, &none), "127.0.0.1");
        let right = TrustedProxy {
            headers: vec!["X-Real-IP".into()],
            ..TrustedProxy::default()
        };
        assert_eq!(real_ip(&h, peer, &right), "1.1.1.1");
        let left = TrustedProxy {
            use_leftmost_ip: true,
            ..right.clone()
        };
        assert_eq!(real_ip(&h, peer, &left), "10.0.0.7");
        // The last occurrence of the header is the proxy's.
        h.append("x-real-ip", HeaderValue::from_static("2001:db8::1"));
        assert_eq!(
            real_ip(&h, peer, &left),
            "2001:0db8:0000:0000:0000:0000:0000:0001"
        );
        let list = ["10.0.0.0/24".to_string(), "2001:db8::1".to_string()];
        assert!(allowed(&list, "10.0.0.7"));
        assert!(allowed(&list, "2001:0db8:0000:0000:0000:0000:0000:0001"));
        assert!(!allowed(&list, "10.0.1.7"));
        assert!(!allowed(&list, ""));
    }

    #[test]
    fn headers_count_only_from_trusted_sources_and_a_bad_value_ends_the_walk() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.7, junk"),
        );
        let proxy = TrustedProxy {
            headers: vec!["X-Forwarded-For".into()],
            sources: vec!["192.168.0.0/16".into()],
            use_leftmost_ip: false,
        };
        let direct = Some("203.0.113.9:5000".parse().unwrap());
        let via_proxy = Some("192.168.1.2:5000".parse().unwrap());
        // From a peer outside the sources: the socket's address, whatever the header says.
        let mut good = HeaderMap::new();
        good.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        assert_eq!(real_ip(&good, direct, &proxy), "203.0.113.9");
        assert_eq!(real_ip(&good, via_proxy, &proxy), "10.0.0.7");
        // The rightmost value does not parse: the walk ends at the proxy, never at 10.0.0.7.
        assert_eq!(real_ip(&h, via_proxy, &proxy), "192.168.1.2");
        assert!(!trusts_every_peer(&proxy));
        assert!(trusts_every_peer(&TrustedProxy {
            sources: Vec::new(),
            ..proxy
        }));
    }
}
