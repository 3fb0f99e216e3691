//! The map as network policy that enforcement engines apply: what the cluster must tell about
//! its workloads ([`inventory`]), the Kubernetes NetworkPolicy rendering ([`networkpolicy`]),
//! and NetworkPolicy's semantics over a call ([`evaluate`]). Pure: the CLI gathers the
//! inventory and writes the files.

pub mod calls;
pub mod evaluate;
pub mod inventory;
pub mod networkpolicy;

#[cfg(test)]
mod tests;
