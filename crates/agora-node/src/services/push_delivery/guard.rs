//! The server-side request forgery guard: which addresses a push delivery may connect to.
//!
//! Push URLs come from API clients. Without a guard, a URL naming `169.254.169.254` (cloud metadata), `localhost`,
//! a private network or the node's own API makes every node a proxy into its networks. The rule: only addresses
//! that are globally routable are reached, unless `[push] allow-networks` lists them. It is applied where the
//! address is known, at delivery time: to IP-literal hosts before the request (reqwest does not resolve them) and
//! to every address DNS returns, through [`GuardedResolver`], so a name that resolves to an internal address (or
//! starts to, later) is refused too. Redirects are never followed, so a public endpoint cannot bounce a delivery
//! inward either.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is not public: the label of `agora_push_refused_total` is `blocked_address` for all of them, the
/// kind goes into the registration error and the (rate-limited) log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonPublic {
    /// `0.0.0.0/8`, `::`: "this host", which connects to the node itself.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7` (and the deprecated site-local `fec0::/10`).
    Private,
    /// `100.64.0.0/10`: carrier-grade NAT, the provider's internal network.
    SharedAddressSpace,
    /// `169.254/16` (cloud metadata services live at 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation, benchmarking, IETF protocol and future-use ranges: never a real push endpoint.
    Reserved,
}

impl NonPublic {
    /// How the kind reads in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            NonPublic::Unspecified => "an unspecified (this-host) address",
            NonPublic::Loopback => "a loopback address",
            NonPublic::Private => "a private-network address",
            NonPublic::SharedAddressSpace => "a carrier-grade NAT (100.64.0.0/10) address",
            NonPublic::LinkLocal => "a link-local address",
            NonPublic::Multicast => "a multicast address",
            NonPublic::Broadcast => "the broadcast address",
            NonPublic::Reserved => "a reserved (documentation, benchmarking or special-purpose) address",
        }
    }
}

/// Classifies an IPv4 address; `None` when it is globally routable.
pub fn classify_v4(ip: Ipv4Addr) -> Option<NonPublic> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => NonPublic::Unspecified,
        (127, _, _) => NonPublic::Loopback,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => NonPublic::Private,
        (100, 64..=127, _) => NonPublic::SharedAddressSpace,
        (169, 254, _) => NonPublic::LinkLocal,
        _ if ip.is_broadcast() => NonPublic::Broadcast,
        (224..=239, _, _) => NonPublic::Multicast,
        // 192.0.0/24 IETF protocol assignments, 192.0.2/24, 198.51.100/24, 203.0.113/24 documentation,
        // 198.18/15 benchmarking, 192.88.99/24 deprecated 6to4 relays, 240/4 future use.
        (192, 0, 0 | 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) | (192, 88, 99) | (240..=255, _, _) => {
            NonPublic::Reserved
        }
        _ => return None,
    })
}

/// Classifies an IPv6 address; `None` when it is globally routable. Addresses that embed an IPv4 address (mapped,
/// NAT64, 6to4) are judged by that address, since that is where the packets end up.
pub fn classify_v6(ip: Ipv6Addr) -> Option<NonPublic> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => NonPublic::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => NonPublic::Loopback,
        // IPv4-compatible (deprecated) ::a.b.c.d.
        [0, 0, 0, 0, 0, 0, _, _] => NonPublic::Reserved,
        // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765 SIIT): a translator forwards to the embedded IPv4 address.
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => return classify_v4(embedded(hi, lo)),
        // NAT64 well-known prefix 64:ff9b::/96: the gateway forwards to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return classify_v4(embedded(hi, lo)),
        // Local-use NAT64 64:ff9b:1::/48.
        [0x64, 0xff9b, 1, ..] => NonPublic::Private,
        // 6to4 2002::/16: the relay forwards to the IPv4 address in bits 16..48.
        [0x2002, hi, lo, ..] => return classify_v4(embedded(hi, lo)),
        // Discard-only 100::/64.
        [0x100, 0, 0, 0, ..] => NonPublic::Reserved,
        // Documentation 2001:db8::/32 and 3fff::/20; IETF protocol assignments 2001::/23 (Teredo, ORCHID...).
        [0x2001, 0xdb8, ..] => NonPublic::Reserved,
        [0x3fff, 0..=0x0fff, ..] => NonPublic::Reserved,
        [0x2001, 0..=0x01ff, ..] => NonPublic::Reserved,
        [hi, ..] if hi & 0xfe00 == 0xfc00 => NonPublic::Private,
        [hi, ..] if hi & 0xffc0 == 0xfec0 => NonPublic::Private,
        [hi, ..] if hi & 0xffc0 == 0xfe80 => NonPublic::LinkLocal,
        [hi, ..] if hi & 0xff00 == 0xff00 => NonPublic::Multicast,
        _ => return None,
    })
}

/// Classifies any address; `None` when it is globally routable.
pub fn classify(ip: IpAddr) -> Option<NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// An address a delivery must not reach, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The address.
    pub ip: IpAddr,
    /// What kind of address it is.
    pub kind: NonPublic,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}; push deliveries reach public addresses only unless [push] allow-networks lists it",
            self.ip,
            self.kind.describe()
        )
    }
}

impl std::error::Error for Blocked {}

/// No address of a name may be reached: the error the resolver hands reqwest, found again in the error's source
/// chain to count the refusal as `blocked_address` rather than as an endpoint failure.
#[derive(Debug)]
pub struct AllBlocked(pub Blocked);

impl fmt::Display for AllBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every address of the host is refused: {}", self.0)
    }
}

impl std::error::Error for AllBlocked {}

/// The rule: public addresses, plus `[push] allow-networks`.
#[derive(Clone, Debug, Default)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
}

impl AddressGuard {
    /// A guard allowing, besides public addresses, the networks in `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressGuard { allow }
    }

    /// `Ok` if a delivery may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        // An IPv4-mapped address is the IPv4 address: `::ffff:127.0.0.1` matches an allowed 127.0.0.0/8 too.
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match classify(canonical) {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|n| n.contains(&canonical) || n.contains(&ip)) => Ok(()),
            Some(kind) => Err(Blocked { ip: canonical, kind }),
        }
    }

    /// Checks a URL's host before any connection: the scheme must be http or https; an IP-literal host (after
    /// WHATWG parsing, so `0x7f.1` and `0` are the IPv4 addresses they denote) is checked here, and `localhost`
    /// (which resolvers answer locally) as 127.0.0.1. Other names are checked when they are resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), UrlRefused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefused::Scheme);
        }
        // The parser serialises IP hosts canonically (IPv6 in brackets), so a literal is exactly what parses here.
        let host = match url.host_str() {
            None | Some("") => return Err(UrlRefused::NoHost),
            Some(host) => host,
        };
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip = match literal.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if is_localhost(host) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Err(_) => return Ok(()),
        };
        self.check(ip).map_err(UrlRefused::Blocked)
    }
}

/// `localhost` and its subdomains, which RFC 6761 reserves for loopback.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Why a URL is not delivered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlRefused {
    /// Not http or https.
    Scheme,
    /// No host.
    NoHost,
    /// The host is an address that may not be reached.
    Blocked(Blocked),
}

impl fmt::Display for UrlRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlRefused::Scheme => f.write_str("only http:// and https:// push URLs are delivered to"),
            UrlRefused::NoHost => f.write_str("the push URL has no host"),
            UrlRefused::Blocked(blocked) => write!(f, "the push URL's host {blocked}"),
        }
    }
}

/// The resolver push deliveries use: the system resolver (getaddrinfo, on tokio's blocking pool), with every
/// address the guard refuses dropped. A name with no address left fails with [`AllBlocked`], so nothing connects.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    guard: Arc<AddressGuard>,
}

impl GuardedResolver {
    /// A resolver filtering through `guard`.
    pub fn new(guard: Arc<AddressGuard>) -> Self {
        GuardedResolver { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match guard.check(addr.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        first_refusal.get_or_insert(blocked);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), first_refusal) {
                (true, Some(blocked)) => Err(Box::new(AllBlocked(blocked)) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The refusal inside a reqwest error, if the guard caused it.
pub fn blocked_in(error: &(dyn std::error::Error + 'static)) -> Option<Blocked> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(AllBlocked(blocked)) = e.downcast_ref::<AllBlocked>() {
            return Some(*blocked);
        }
        // An `io::Error` wrapping ours reports the wrapped error's source, not the wrapped error itself.
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if let Some(AllBlocked(blocked)) = wrapped.and_then(|inner| inner.downcast_ref::<AllBlocked>()) {
            return Some(*blocked);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kind(ip: &str) -> Option<NonPublic> {
        classify(ip.parse().expect("address"))
    }

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        for (ip, expected) in [
            ("0.0.0.0", NonPublic::Unspecified),
            ("0.1.2.3", NonPublic::Unspecified),
            ("127.0.0.1", NonPublic::Loopback),
            ("127.255.255.254", NonPublic::Loopback),
            ("10.1.2.3", NonPublic::Private),
            ("172.16.0.1", NonPublic::Private),
            ("172.31.255.255", NonPublic::Private),
            ("192.168.1.1", NonPublic::Private),
            ("100.64.0.1", NonPublic::SharedAddressSpace),
            ("100.127.255.255", NonPublic::SharedAddressSpace),
            ("169.254.169.254", NonPublic::LinkLocal),
            ("224.0.0.1", NonPublic::Multicast),
            ("239.255.255.255", NonPublic::Multicast),
            ("255.255.255.255", NonPublic::Broadcast),
            ("240.0.0.1", NonPublic::Reserved),
            ("192.0.2.10", NonPublic::Reserved),
            ("198.51.100.1", NonPublic::Reserved),
            ("203.0.113.7", NonPublic::Reserved),
            ("198.18.0.1", NonPublic::Reserved),
            ("::", NonPublic::Unspecified),
            ("::1", NonPublic::Loopback),
            ("::ffff:127.0.0.1", NonPublic::Loopback),
            ("::ffff:169.254.169.254", NonPublic::LinkLocal),
            ("::ffff:10.0.0.1", NonPublic::Private),
            ("::127.0.0.1", NonPublic::Reserved),
            ("::ffff:0:127.0.0.1", NonPublic::Loopback),
            ("::ffff:0:10.1.2.3", NonPublic::Private),
            ("64:ff9b::7f00:1", NonPublic::Loopback),
            ("64:ff9b::a9fe:a9fe", NonPublic::LinkLocal),
            ("64:ff9b:1::1", NonPublic::Private),
            ("2002:7f00:1::", NonPublic::Loopback),
            ("2002:0a00:0001::1", NonPublic::Private),
            ("fc00::1", NonPublic::Private),
            ("fd12:3456::1", NonPublic::Private),
            ("fec0::1", NonPublic::Private),
            ("fe80::1", NonPublic::LinkLocal),
            ("febf::1", NonPublic::LinkLocal),
            ("ff02::1", NonPublic::Multicast),
            ("2001:db8::1", NonPublic::Reserved),
            ("2001::1", NonPublic::Reserved),
            ("100::1", NonPublic::Reserved),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.1.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_networks_let_chosen_ranges_through_in_either_form() {
        let guard = AddressGuard::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]);
        assert_eq!(guard.check("10.9.9.9".parse().expect("ip")), Ok(()));
        assert_eq!(guard.check("::ffff:10.9.9.9".parse().expect("ip")), Ok(()));
        assert_eq!(guard.check("::1".parse().expect("ip")), Ok(()));
        let refused = guard.check("::ffff:127.0.0.1".parse().expect("ip"));
        assert_eq!(
            refused,
            Err(Blocked {
                ip: "127.0.0.1".parse().expect("ip"),
                kind: NonPublic::Loopback
            }),
            "a mapped address is reported as the IPv4 address it is"
        );
        assert_eq!(guard.check("8.8.8.8".parse().expect("ip")), Ok(()));
    }

    #[test]
    fn urls_are_judged_after_whatwg_parsing() {
        let guard = AddressGuard::default();
        let refused = |url: &str| {
            let url = reqwest::Url::parse(url).expect("url");
            guard.check_url(&url)
        };
        for (url, kind) in [
            ("http://0x7f.1/", NonPublic::Loopback),
            ("http://0/", NonPublic::Unspecified),
            ("http://2130706433/", NonPublic::Loopback),
            ("http://127.1:8080/x", NonPublic::Loopback),
            ("http://169.254.169.254/latest/meta-data", NonPublic::LinkLocal),
            ("http://[::ffff:127.0.0.1]/", NonPublic::Loopback),
            ("http://[::1]:7911/v1/events", NonPublic::Loopback),
            ("http://localhost:7911/", NonPublic::Loopback),
            ("https://api.LOCALHOST./", NonPublic::Loopback),
        ] {
            match refused(url) {
                Err(UrlRefused::Blocked(b)) => assert_eq!(b.kind, kind, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(refused("ftp://example.com/"), Err(UrlRefused::Scheme));
        assert_eq!(refused("https://push.example.com/v1?token=x"), Ok(()));
        assert_eq!(refused("https://8.8.8.8/"), Ok(()));
    }

    proptest! {
        /// Every address of the ranges that must never be reached is refused, in both its IPv4 and mapped forms.
        #[test]
        fn internal_ranges_are_always_refused(host in any::<u32>(), which in 0usize..9) {
            let (base, prefix): (u32, u32) = [
                (0x7f00_0000, 8), (0x0a00_0000, 8), (0xac10_0000, 12), (0xc0a8_0000, 16), (0xa9fe_0000, 16),
                (0x6440_0000, 10), (0x0000_0000, 8), (0xe000_0000, 4), (0xf000_0000, 4),
            ][which];
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let ip = Ipv4Addr::from((base & mask) | (host & !mask));
            let guard = AddressGuard::default();
            prop_assert!(guard.check(IpAddr::V4(ip)).is_err(), "{}", ip);
            prop_assert!(guard.check(IpAddr::V6(ip.to_ipv6_mapped())).is_err(), "{}", ip);
            prop_assert!(classify_v6(Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(ip)))).is_some());
        }

        /// Allowing a network lets exactly that network through, nothing around it.
        #[test]
        fn an_allowed_network_opens_only_itself(a in any::<u32>(), b in any::<u32>(), prefix in 8u8..=32) {
            let network = IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (a & 0x00ff_ffff))), prefix)
                .expect("valid prefix")
                .trunc();
            let guard = AddressGuard::new(vec![network]);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (b & 0x00ff_ffff)));
            prop_assert_eq!(guard.check(ip).is_ok(), network.contains(&ip));
        }

        /// The IPv6 classifier never panics and agrees with the standard library where both have an opinion.
        #[test]
        fn v6_agrees_with_std_on_loopback_multicast_and_unspecified(bits in any::<u128>()) {
            let ip = Ipv6Addr::from(bits);
            let kind = classify_v6(ip);
            if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
                prop_assert!(kind.is_some());
            }
        }
    }
}
