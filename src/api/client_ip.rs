//! The client's address, as PocketBase's `RealIP` finds it, and the superuser allowlist
//! (`superuserIPs`) check.
//!
//! The address is the socket's, unless `trustedProxy.headers` names headers that a proxy in
//! front sets: the first of them that the request carries gives it (its last occurrence,
//! which the proxy controls), its rightmost valid address, or its leftmost with
//! `useLeftmostIP`. IPv6 addresses are written out in full, as PocketBase writes them.

use crate::settings::TrustedProxy;
use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The socket's peer, which [`crate::serve`] puts on every request.
pub fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

/// PocketBase's `RealIP`; "" when there is neither a usable header nor a socket address.
pub fn real_ip(headers: &HeaderMap, peer: Option<SocketAddr>, proxy: &TrustedProxy) -> String {
    for name in &proxy.headers {
        let Some(last) = headers.get_all(name.as_str()).iter().next_back() else {
            continue;
        };
        let Ok(list) = last.to_str() else { continue };
        if list.is_empty() {
            continue;
        }
        let mut candidates: Vec<&str> = list.split(',').collect();
        if !proxy.use_leftmost_ip {
            candidates.reverse();
        }
        if let Some(ip) = candidates
            .iter()
            .find_map(|c| c.trim().parse::<IpAddr>().ok())
        {
            return expanded(ip);
        }
    }
    peer.map(|p| expanded(p.ip())).unwrap_or_default()
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
            use_leftmost_ip: false,
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
}
