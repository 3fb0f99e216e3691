//! The map as network policy that enforcement engines apply: what the cluster must tell about
//! its workloads ([`inventory`]) and the Kubernetes NetworkPolicy rendering ([`networkpolicy`]).
//! Pure: the CLI gathers the inventory and writes the files.

pub mod inventory;
pub mod networkpolicy;

#[cfg(test)]
mod tests;
