//! `Cidr`: an IPv4 or IPv6 network (`127.0.0.0/8`, `::1/128`) used by `[[auth.hba]]`
//! rules to match client addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a CIDR string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("{text:?} is not an IP address; write a network like \"127.0.0.0/8\" or \"::1/128\"")]
    Address {
        /// The address part as written.
        text: String,
    },
    /// The part after `/` is not a number within the address family's bit width.
    #[error("prefix length {text:?} is not valid for {family}; use a number from 0 to {max}")]
    Prefix {
        /// The prefix part as written.
        text: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
    /// The address has bits set beyond the prefix, which usually means a typo.
    #[error("{given} has bits set beyond the /{prefix} prefix; did you mean {suggestion}?")]
    HostBits {
        /// The network as written.
        given: String,
        /// The prefix length.
        prefix: u8,
        /// The network with the host bits cleared.
        suggestion: String,
    },
}

/// An IP network: an address whose bits beyond `prefix_len` are zero, plus that prefix
/// length. A bare address (no `/`) is a single host (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Builds a network; fails when `prefix_len` is too long for the address family or
    /// `network` has bits set beyond it.
    pub fn new(network: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let (family, max) = family(network);
        if prefix_len > max {
            return Err(CidrError::Prefix {
                text: prefix_len.to_string(),
                family,
                max,
            });
        }
        let cleared = mask(network, prefix_len);
        if cleared != network {
            return Err(CidrError::HostBits {
                given: format!("{network}/{prefix_len}"),
                prefix: prefix_len,
                suggestion: format!("{cleared}/{prefix_len}"),
            });
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The number of leading bits that must match.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when `addr` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.0.1`) matches IPv4 networks, since that is how an IPv4 client
    /// appears on a dual-stack socket.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => addr,
        };
        family(addr) == family(self.network) && mask(addr, self.prefix_len) == self.network
    }
}

fn family(addr: IpAddr) -> (&'static str, u8) {
    match addr {
        IpAddr::V4(_) => ("IPv4", 32),
        IpAddr::V6(_) => ("IPv6", 128),
    }
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr_text.parse().map_err(|_| CidrError::Address {
            text: addr_text.to_owned(),
        })?;
        let (family, max) = family(network);
        let prefix_len = match prefix_text {
            None => max,
            Some(text) => match text.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(CidrError::Prefix {
                        text: text.to_owned(),
                        family,
                        max,
                    })
                }
            },
        };
        Cidr::new(network, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_network_contains_its_addresses_only() {
        let net: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("127.0.0.1")));
        assert!(net.contains(ip("127.255.255.255")));
        assert!(!net.contains(ip("128.0.0.1")));
        assert!(!net.contains(ip("10.0.0.1")));
        assert!(!net.contains(ip("::1")));
        assert!(net.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn odd_prefixes_and_edges() {
        let net: Cidr = "10.1.0.0/17".parse().unwrap();
        assert!(net.contains(ip("10.1.127.255")));
        assert!(!net.contains(ip("10.1.128.0")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
        let host: Cidr = "192.168.1.5".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains(ip("192.168.1.5")));
        assert!(!host.contains(ip("192.168.1.6")));
    }

    #[test]
    fn ipv6_networks() {
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        assert!(!net.contains(ip("127.0.0.1")));
        let lo: Cidr = "::1".parse().unwrap();
        assert_eq!(lo.to_string(), "::1/128");
        assert!(lo.contains(ip("::1")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("fe80::1")));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = "localhost/8".parse::<Cidr>().unwrap_err();
        assert!(
            err.to_string()
                .contains("\"localhost\" is not an IP address"),
            "{err}"
        );
        let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("from 0 to 32"), "{err}");
        let err = "10.0.0.0/x".parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("prefix length \"x\""), "{err}");
        let err = "::/129".parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("from 0 to 128"), "{err}");
        let err = "127.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(
            err.to_string().contains("did you mean 127.0.0.0/8?"),
            "{err}"
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "10.0.0.1/32"] {
            let net: Cidr = text.parse().unwrap();
            assert_eq!(net.to_string(), text);
        }
    }
}
