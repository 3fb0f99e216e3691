//! IP ranges (`10.244.0.0/16`, `fd00:10:96::/112`) for the cluster's pod and Service networks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

/// An IPv4 or IPv6 network: an address with a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    /// No `/` separating address and prefix length.
    #[error("CIDR {0:?} has no prefix length")]
    MissingPrefix(String),
    /// The address part does not parse.
    #[error("CIDR {0:?} has an invalid address")]
    BadAddress(String),
    /// The prefix length is not a number within the address family's width.
    #[error("CIDR {0:?} has an invalid prefix length")]
    BadPrefix(String),
}

impl IpCidr {
    /// A network from an address and prefix length; `None` when the prefix is too long.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= max_prefix(addr)).then_some(IpCidr { addr, prefix_len })
    }

    /// Whether `ip` lies in this network (an IPv4 address never lies in an IPv6 network).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_bits(u32::BITS, self.prefix_len);
                u128::from(u32::from(net)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_bits(u128::BITS, self.prefix_len);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The top `prefix_len` bits of a `width`-bit address, as a u128 mask.
fn mask_bits(width: u32, prefix_len: u8) -> u128 {
    let prefix = u32::from(prefix_len);
    if prefix == 0 {
        return 0;
    }
    let ones = u128::MAX >> (128 - prefix);
    ones << (width - prefix)
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix(s.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix(s.to_string()))?;
        IpCidr::new(addr, prefix).ok_or_else(|| CidrError::BadPrefix(s.to_string()))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    #[test]
    fn ipv4_and_ipv6_ranges_contain_their_addresses_only() {
        let v4: IpCidr = "10.244.0.0/16".parse().expect("valid");
        assert!(v4.contains(ip("10.244.3.7")));
        assert!(!v4.contains(ip("10.245.0.1")));
        assert!(!v4.contains(ip("fd00::1")));
        let v6: IpCidr = "fd00:10:96::/112".parse().expect("valid");
        assert!(v6.contains(ip("fd00:10:96::a")));
        assert!(!v6.contains(ip("fd00:10:97::a")));
        let all: IpCidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains(ip("192.0.2.1")));
        assert_eq!(v4.to_string(), "10.244.0.0/16");
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        assert!(matches!(
            "10.0.0.0".parse::<IpCidr>(),
            Err(CidrError::MissingPrefix(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<IpCidr>(),
            Err(CidrError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<IpCidr>(),
            Err(CidrError::BadPrefix(_))
        ));
    }
}
