//! Pod IP allocation: the lowest free address of the node's range first, so a restarted pod's
//! replacement usually gets the IP its predecessor held (which exercises IP reuse).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Addresses of a /24 handed out to pods (owner = pod UID).
#[derive(Debug, Clone)]
pub struct PodIpPool {
    network: [u8; 3],
    first_host: u8,
    last_host: u8,
    taken: BTreeMap<u8, String>,
}

impl PodIpPool {
    /// Pool of `network.first_host ..= network.last_host`.
    pub fn new(network: Ipv4Addr, first_host: u8, last_host: u8) -> Self {
        let o = network.octets();
        PodIpPool {
            network: [o[0], o[1], o[2]],
            first_host,
            last_host,
            taken: BTreeMap::new(),
        }
    }

    /// The lowest free address, now owned by `owner`; the address it already holds if any.
    pub fn allocate(&mut self, owner: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.held_by(owner) {
            return Some(ip);
        }
        let host = (self.first_host..=self.last_host).find(|h| !self.taken.contains_key(h))?;
        self.taken.insert(host, owner.to_string());
        Some(self.address(host))
    }

    /// The address `owner` holds.
    pub fn held_by(&self, owner: &str) -> Option<Ipv4Addr> {
        self.taken
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(h, _)| self.address(*h))
    }

    /// Frees what `owner` holds.
    pub fn release(&mut self, owner: &str) {
        self.taken.retain(|_, o| o != owner);
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.network;
        Ipv4Addr::new(a, b, c, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PodIpPool {
        PodIpPool::new(Ipv4Addr::new(10, 244, 0, 0), 2, 4)
    }

    #[test]
    fn lowest_free_address_is_handed_out_first() {
        let mut pool = pool();
        assert_eq!(pool.allocate("a"), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(pool.allocate("b"), Some(Ipv4Addr::new(10, 244, 0, 3)));
        pool.release("a");
        assert_eq!(pool.allocate("c"), Some(Ipv4Addr::new(10, 244, 0, 2)));
    }

    #[test]
    fn an_owner_keeps_its_address_and_the_pool_runs_out() {
        let mut pool = pool();
        let a = pool.allocate("a");
        assert_eq!(pool.allocate("a"), a);
        pool.allocate("b");
        pool.allocate("c");
        assert_eq!(pool.allocate("d"), None);
    }
}
