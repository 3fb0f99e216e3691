//! Veth pairs between a pod namespace and the host namespace, from rtnetlink.
//!
//! Inside a pod namespace, a veth's `IFLA_LINK` is the ifindex of its peer *in the peer's
//! namespace*, and `IFLA_LINK_NETNSID` says which namespace that is, as an nsid local to the
//! pod namespace. [`veth_peers_in`] keeps only the veths whose nsid is the host's (asked with
//! `RTM_GETNSID` and the host namespace's descriptor), so an ifindex that belongs to some other
//! namespace is never taken for a host interface. The scan then checks the pair from the host
//! side too ([`HostVeth`]: the host interface of that index is a veth whose own `IFLA_LINK`
//! is the pod-side index), which also catches an index reused between the two dumps.
//!
//! The messages are small and fixed (`ifinfomsg`, `rtgenmsg`, `rtattr`), so they are built and
//! parsed here, with every length checked, rather than pulling in a route-netlink crate.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const RTGENMSG_PADDED: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// Flag bits the kernel may set on an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Receive buffer: the kernel sizes dump datagrams to the reader's buffer, up to 32 KiB.
const RECV_BUFFER_BYTES: usize = 64 * 1024;

/// One interface of a namespace, as far as pairing veths goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Its index in its own namespace.
    pub index: i32,
    /// Its name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...), when it has one.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<i32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace, as an nsid of this namespace. Absent when
    /// the peer is in the same namespace.
    pub link_netnsid: Option<i32>,
}

impl LinkInfo {
    fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// A veth in a pod namespace whose peer is in the host namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethPair {
    /// Index of the pod-side end, in the pod namespace.
    pub pod_index: i32,
    /// Index of the host-side end, in the host namespace.
    pub host_index: i32,
}

/// A host-side veth: its index and its peer's index (in the peer's namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostVeth {
    /// Peer index, in the peer's namespace.
    pub peer_index: i32,
}

fn netlink_io(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A route-netlink socket of the calling thread's namespace.
fn route_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(netlink_io("open rtnetlink socket"))?;
    socket
        .bind_auto()
        .map_err(netlink_io("bind rtnetlink socket"))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(netlink_io("connect rtnetlink socket"))?;
    Ok(socket)
}

fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn message(kind: u16, flags: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// `RTM_GETLINK` dump request for every interface.
fn getlink_request(sequence: u32) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG];
    body[0] = libc::AF_UNSPEC as u8;
    message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, sequence, &body)
}

/// `RTM_GETNSID` request: the nsid this namespace gives the namespace open at `fd`.
fn getnsid_request(sequence: u32, fd: RawFd) -> Vec<u8> {
    let mut body = vec![0u8; RTGENMSG_PADDED];
    body[0] = libc::AF_UNSPEC as u8;
    push_attr(&mut body, NETNSA_FD, &(fd as u32).to_ne_bytes());
    message(RTM_GETNSID, NLM_F_REQUEST, sequence, &body)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    read_u32(bytes, at).map(|v| v as i32)
}

/// The attributes in `bytes`, as (type without flag bits, value); stops at the first one
/// whose length does not fit.
fn attributes(bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let (Some(len), Some(kind)) = (read_u16(bytes, offset), read_u16(bytes, offset + 2)) {
        let len = usize::from(len);
        let Some(value) = bytes.get(offset + 4..offset + len.max(4)) else {
            break;
        };
        if len < 4 {
            break;
        }
        out.push((kind & NLA_TYPE_MASK, value));
        offset += len.next_multiple_of(4);
    }
    out
}

/// One netlink message: (type, payload after the header).
fn messages(datagram: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let (Some(len), Some(kind)) = (read_u32(datagram, offset), read_u16(datagram, offset + 4))
    {
        let len = len as usize;
        if len < NLMSG_HDR {
            break;
        }
        let Some(payload) = datagram.get(offset + NLMSG_HDR..offset + len) else {
            break;
        };
        out.push((kind, payload));
        offset += len.next_multiple_of(4);
    }
    out
}

/// Parses the payload of an `RTM_NEWLINK` message.
pub fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    let index = read_i32(payload, 4)?;
    let mut link = LinkInfo {
        index,
        ..LinkInfo::default()
    };
    for (kind, value) in attributes(payload.get(IFINFOMSG..)?) {
        match kind {
            IFLA_IFNAME => {
                link.name = String::from_utf8_lossy(value)
                    .trim_end_matches('\0')
                    .to_owned();
            }
            IFLA_LINK => link.link = read_i32(value, 0),
            IFLA_LINK_NETNSID => link.link_netnsid = read_i32(value, 0),
            IFLA_LINKINFO => {
                link.kind = attributes(value)
                    .into_iter()
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned());
            }
            _ => {}
        }
    }
    Some(link)
}

/// The error an `NLMSG_ERROR` payload carries, or None for an acknowledgement.
fn netlink_error(payload: &[u8]) -> Option<io::Error> {
    let code = read_i32(payload, 0)?;
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

/// Sends `request` and reads answers until `NLMSG_DONE` (dump) or the first answer (`single`).
fn exchange(socket: &Socket, request: &[u8], single: bool) -> io::Result<Vec<(u16, Vec<u8>)>> {
    socket
        .send(request, 0)
        .map_err(netlink_io("send rtnetlink request"))?;
    let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
    let mut out = Vec::new();
    loop {
        let size = socket
            .recv(&mut &mut buffer[..], libc::MSG_TRUNC)
            .map_err(netlink_io("receive rtnetlink answer"))?;
        if size > buffer.len() {
            return Err(io::Error::other(format!(
                "rtnetlink datagram of {size} bytes truncated"
            )));
        }
        for (kind, payload) in messages(&buffer[..size]) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => match netlink_error(payload) {
                    Some(err) => return Err(err),
                    None => return Ok(out),
                },
                _ => out.push((kind, payload.to_vec())),
            }
        }
        if single && !out.is_empty() {
            return Ok(out);
        }
    }
}

/// Every interface of the calling thread's namespace.
pub fn dump_links() -> io::Result<Vec<LinkInfo>> {
    let socket = route_socket()?;
    links_of(&socket)
}

fn links_of(socket: &Socket) -> io::Result<Vec<LinkInfo>> {
    Ok(exchange(socket, &getlink_request(1), false)?
        .into_iter()
        .filter(|(kind, _)| *kind == RTM_NEWLINK)
        .filter_map(|(_, payload)| parse_link(&payload))
        .collect())
}

/// The nsid the calling thread's namespace gives the namespace open at `fd` (None: not
/// assigned, i.e. no interface here has a peer there).
fn nsid_of(socket: &Socket, fd: RawFd) -> io::Result<Option<i32>> {
    let answers = exchange(socket, &getnsid_request(2, fd), true)?;
    Ok(answers
        .iter()
        .filter(|(kind, _)| *kind == RTM_NEWNSID)
        .find_map(|(_, payload)| {
            attributes(payload.get(RTGENMSG_PADDED..)?)
                .into_iter()
                .find(|(k, _)| *k == NETNSA_NSID)
                .and_then(|(_, v)| read_i32(v, 0))
        })
        .filter(|nsid| *nsid >= 0))
}

/// The veths of the calling thread's namespace whose peer lives in the namespace open at
/// `host_fd` (the host's). Dumps the links first: that assigns the nsids the kernel reports.
pub fn veth_peers_in(host_fd: RawFd) -> io::Result<Vec<VethPair>> {
    let socket = route_socket()?;
    let links = links_of(&socket)?;
    let Some(host_nsid) = nsid_of(&socket, host_fd)? else {
        return Ok(Vec::new());
    };
    Ok(pairs_to(&links, host_nsid))
}

/// The veths among `links` whose peer is in the namespace `nsid` names.
pub fn pairs_to(links: &[LinkInfo], nsid: i32) -> Vec<VethPair> {
    links
        .iter()
        .filter(|l| l.is_veth() && l.link_netnsid == Some(nsid))
        .filter_map(|l| {
            Some(VethPair {
                pod_index: l.index,
                host_index: l.link.filter(|i| *i > 0)?,
            })
        })
        .collect()
}

/// The veths among the host's `links` whose peer is in another namespace, by index.
pub fn host_veths(links: &[LinkInfo]) -> HashMap<i32, HostVeth> {
    links
        .iter()
        .filter(|l| l.is_veth() && l.link_netnsid.is_some())
        .filter_map(|l| {
            Some((
                l.index,
                HostVeth {
                    peer_index: l.link?,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use super::*;

    fn link_message(
        index: i32,
        name: &str,
        kind: Option<&str>,
        link: i32,
        nsid: Option<i32>,
    ) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG];
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        push_attr(&mut body, IFLA_IFNAME, &name_z);
        push_attr(&mut body, IFLA_LINK, &link.to_ne_bytes());
        if let Some(nsid) = nsid {
            push_attr(&mut body, IFLA_LINK_NETNSID, &nsid.to_ne_bytes());
        }
        if let Some(kind) = kind {
            let mut info = Vec::new();
            push_attr(&mut info, IFLA_INFO_KIND, kind.as_bytes());
            // Nested attributes carry NLA_F_NESTED.
            push_attr(&mut body, IFLA_LINKINFO | 0x8000, &info);
        }
        message(RTM_NEWLINK, 0, 1, &body)
    }

    fn parse_all(datagram: &[u8]) -> Vec<LinkInfo> {
        messages(datagram)
            .into_iter()
            .filter_map(|(_, p)| parse_link(p))
            .collect()
    }

    #[test]
    fn link_attributes_are_parsed() {
        let mut datagram = link_message(2, "eth0", Some("veth"), 17, Some(0));
        datagram.extend(link_message(1, "lo", None, 1, None));
        let links = parse_all(&datagram);
        assert_eq!(
            links,
            vec![
                LinkInfo {
                    index: 2,
                    name: "eth0".into(),
                    kind: Some("veth".into()),
                    link: Some(17),
                    link_netnsid: Some(0),
                },
                LinkInfo {
                    index: 1,
                    name: "lo".into(),
                    kind: None,
                    link: Some(1),
                    link_netnsid: None,
                },
            ]
        );
    }

    #[test]
    fn only_veths_whose_peer_is_in_the_host_namespace_pair() {
        let links = parse_all(
            &[
                link_message(2, "eth0", Some("veth"), 17, Some(0)),
                // Peer in another namespace (nsid 1): its index means nothing on the host.
                link_message(3, "net1", Some("veth"), 18, Some(1)),
                // Peer in this namespace.
                link_message(4, "v0", Some("veth"), 5, None),
                // Not a veth (an ipvlan on a host interface).
                link_message(6, "ipvl", Some("ipvlan"), 9, Some(0)),
            ]
            .concat(),
        );
        assert_eq!(
            pairs_to(&links, 0),
            vec![VethPair {
                pod_index: 2,
                host_index: 17
            }]
        );
        let host = host_veths(&links);
        assert_eq!(host.len(), 2);
        assert_eq!(host[&2], HostVeth { peer_index: 17 });
        assert!(!host.contains_key(&4));
    }

    #[test]
    fn truncated_and_lying_lengths_are_not_read_past() {
        let mut datagram = link_message(2, "eth0", Some("veth"), 17, Some(0));
        for cut in 0..datagram.len() {
            let _ = parse_all(&datagram[..cut]);
        }
        // An attribute claiming more bytes than there are.
        datagram[NLMSG_HDR + IFINFOMSG..NLMSG_HDR + IFINFOMSG + 2]
            .copy_from_slice(&u16::MAX.to_ne_bytes());
        let links = parse_all(&datagram);
        assert!(links.is_empty() || links[0].link.is_none());
        assert!(attributes(&[2, 0, 1, 0]).is_empty());
    }

    #[test]
    fn this_namespace_lists_its_loopback_and_has_no_veth_to_itself() {
        let links = dump_links().expect("RTM_GETLINK dump");
        assert!(
            links.iter().any(|l| l.name == "lo" && l.index == 1),
            "{links:?}"
        );
        let own = File::open("/proc/thread-self/ns/net").expect("own netns");
        // No interface is paired with a peer in its own namespace through an nsid.
        assert!(veth_peers_in(own.as_raw_fd()).expect("pairs").is_empty());
    }
}
