//! Where webhook deliveries may go. Anyone allowed to register a webhook picks a URL, so by
//! default a worker refuses to connect to loopback, private, link-local (cloud metadata
//! services live there), shared-address, multicast and reserved ranges, checked on the
//! address the connection is actually made to, after DNS: a name that resolves (or
//! re-resolves) to an internal address is refused as well. Receivers on internal networks
//! are allowed by name or range ([`WebhookEgress::allow`], `DCS_WEBHOOK_ALLOW`).

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::client::legacy::connect::dns::Name;
use queue_core::{Error, Result};

/// The addresses webhook deliveries may connect to: every public address, and what was
/// allowed besides (host names, addresses or CIDR ranges).
///
/// ```
/// use queue_worker::WebhookEgress;
///
/// let egress = WebhookEgress::default();
/// assert!(egress.permits("hooks.example.com", "93.184.216.34".parse().unwrap()));
/// assert!(!egress.permits("metadata", "169.254.169.254".parse().unwrap()));
/// assert!(!egress.permits("localhost", "127.0.0.1".parse().unwrap()));
///
/// let internal = WebhookEgress::from_list("10.0.0.0/8, receiver.internal").unwrap();
/// assert!(internal.permits("x", "10.1.2.3".parse().unwrap()));
/// assert!(internal.permits("receiver.internal", "192.168.1.5".parse().unwrap()));
/// assert!(!internal.permits("x", "192.168.1.5".parse().unwrap()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookEgress {
    allowed: Vec<Allowed>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    /// Any address of this host name (as the URL spells it).
    Host(String),
    /// Addresses in this range: (network, prefix length).
    Range(IpAddr, u8),
}

impl WebhookEgress {
    /// Also allows `entry`: an address (`127.0.0.1`, `::1`), a range (`10.0.0.0/8`,
    /// `fd00::/8`) or a host name (any address it resolves to). A malformed one is an error
    /// naming it.
    pub fn allow(mut self, entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let bad = |why: &str| Error::config(format!("webhook egress entry `{entry}`: {why}"));
        if entry.is_empty() {
            return Err(bad("empty"));
        }
        let allowed = match entry.split_once('/') {
            Some((net, bits)) => {
                let net: IpAddr = net.parse().map_err(|_| bad("not an address range"))?;
                let most = if net.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= most)
                    .ok_or_else(|| bad("prefix length out of range"))?;
                Allowed::Range(net, bits)
            }
            None => match entry.parse::<IpAddr>() {
                Ok(ip) => Allowed::Range(ip, if ip.is_ipv4() { 32 } else { 128 }),
                Err(_)
                    if entry
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) =>
                {
                    Allowed::Host(entry.to_ascii_lowercase())
                }
                Err(_) => return Err(bad("not an address, range or host name")),
            },
        };
        self.allowed.push(allowed);
        Ok(self)
    }

    /// Every entry of a comma-separated list (`DCS_WEBHOOK_ALLOW`).
    pub fn from_list(list: &str) -> Result<Self> {
        list.split(',')
            .filter(|e| !e.trim().is_empty())
            .try_fold(Self::default(), |egress, entry| egress.allow(entry))
    }

    /// Whether a delivery to `host` may connect to `addr`: a public address, or one the
    /// allow-list names (by host or range).
    pub fn permits(&self, host: &str, addr: IpAddr) -> bool {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        !is_internal(addr)
            || self.allowed.iter().any(|a| match a {
                Allowed::Host(h) => *h == host,
                Allowed::Range(net, bits) => in_range(addr, *net, *bits),
            })
    }
}

/// Loopback, private, link-local, shared (CGNAT), benchmarking, documentation, multicast,
/// reserved and unspecified addresses, IPv4 and IPv6 (an IPv4 address inside IPv6 counts
/// as itself).
fn is_internal(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64: the IPv4 address it reaches.
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return internal_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard
        || s[..6] == [0; 6] // IPv4-compatible (deprecated)
}

fn in_range(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (addr, net, width) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        (IpAddr::V6(a), IpAddr::V4(n)) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
            None => return false,
        },
        _ => return false,
    };
    let bits = u32::from(bits);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (addr >> shift) == (net >> shift)
}

/// Why a delivery was not sent: its address is not one the egress policy allows.
#[derive(Debug)]
pub(crate) struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused by the webhook egress policy")
    }
}

impl std::error::Error for Refused {}

/// The DNS resolver of the webhook client: resolves, then keeps only the addresses the
/// policy permits (the connector connects to what this answers, so the check is on the
/// address actually used, not on an earlier lookup).
#[derive(Clone, Debug)]
pub(crate) struct Resolve {
    pub(crate) egress: Arc<WebhookEgress>,
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for Resolve {
    type Response = Addrs;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Addrs, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let egress = Arc::clone(&self.egress);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| egress.permits(&host, a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(Refused) as Self::Error);
            }
            Ok(found.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_by_default() {
        let egress = WebhookEgress::default();
        for internal in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(!egress.permits("h", ip(internal)), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(egress.permits("h", ip(public)), "{public}");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_and_hosts() {
        let egress =
            WebhookEgress::from_list("127.0.0.1, 10.0.0.0/8,fd00::/8, Hooks.Internal").unwrap();
        assert!(egress.permits("x", ip("127.0.0.1")));
        assert!(!egress.permits("x", ip("127.0.0.2")));
        assert!(egress.permits("x", ip("10.200.0.1")));
        assert!(egress.permits("x", ip("fd12::1")));
        assert!(egress.permits("hooks.internal", ip("192.168.3.3")));
        assert!(!egress.permits("other", ip("192.168.3.3")));
        assert!(egress.permits("x", ip("::ffff:127.0.0.1")));
        for bad in ["10.0.0.0/33", "a b", "::/129", "/8"] {
            let err = WebhookEgress::default().allow(bad).unwrap_err().to_string();
            assert!(err.contains(bad.trim()), "{err}");
        }
    }
}
