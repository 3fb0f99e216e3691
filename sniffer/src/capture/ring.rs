//! One AF_PACKET socket on every interface with a TPACKET_V3 receive ring.
//!
//! The kernel fills fixed-size blocks with packets and hands a block to user space when it is
//! full or [`BLOCK_RETIRE_TIMEOUT_MS`] after its first packet. We walk the block, then give it
//! back. All `unsafe` of the capture lives in this file.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use libc::{c_int, c_void, sock_filter, sock_fprog, socklen_t};

use super::CaptureError;

/// Longest a partly filled block waits before the kernel hands it over.
pub const BLOCK_RETIRE_TIMEOUT_MS: u32 = 100;
/// Frame slot size the kernel checks the geometry against (V3 packs packets tightly).
const FRAME_BYTES: u32 = 2048;

/// Size of the receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per block: a multiple of the page size; the largest packet must fit.
    pub block_bytes: u32,
    /// Number of blocks.
    pub block_count: u32,
}

impl Default for RingGeometry {
    /// 4 blocks of 1 MiB: 4 MiB of kernel memory.
    fn default() -> Self {
        RingGeometry {
            block_bytes: 1 << 20,
            block_count: 4,
        }
    }
}

/// Kernel counters since the previous read (PACKET_STATISTICS resets on read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets that passed the filter (including dropped ones).
    pub packets: u32,
    /// Packets dropped because no block was free.
    pub drops: u32,
    /// Times the queue froze for lack of a free block.
    pub freezes: u32,
}

/// One captured packet, borrowed from a block the user owns.
#[derive(Debug, Clone, Copy)]
pub struct RingPacket<'a> {
    /// Bytes from the link-layer header on, up to the snap length.
    pub data: &'a [u8],
    /// Offset of the network header in `data`.
    pub network_offset: usize,
    /// Interface index the packet was seen on.
    pub ifindex: i32,
    /// ARPHRD_* type of that interface.
    pub hatype: u16,
    /// PACKET_HOST, PACKET_OUTGOING, ...
    pub pkttype: u8,
    /// When the kernel saw the packet, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// The capture socket and its mapped ring.
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    geometry: RingGeometry,
    next_block: usize,
}

// SAFETY: the mapping is owned by this value and only touched through `&mut self`.
unsafe impl Send for PacketRing {}

fn check(ret: c_int, what: &'static str) -> Result<c_int, CaptureError> {
    if ret < 0 {
        Err(CaptureError::Syscall {
            what,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(ret)
    }
}

fn set_option<T>(
    fd: RawFd,
    level: c_int,
    name: c_int,
    value: &T,
    what: &'static str,
) -> Result<(), CaptureError> {
    // SAFETY: `value` points to a live T of the given size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<c_void>(),
            size_of::<T>() as socklen_t,
        )
    };
    check(ret, what).map(|_| ())
}

/// Attaches a classic BPF program to a socket (SO_ATTACH_FILTER).
pub fn attach_filter(fd: RawFd, program: &[sock_filter]) -> Result<(), CaptureError> {
    let fprog = sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| CaptureError::FilterTooLong)?,
        filter: program.as_ptr().cast_mut(),
    };
    set_option(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &fprog,
        "attach BPF filter",
    )
}

impl PacketRing {
    /// Opens the socket, attaches `filter`, maps the ring and binds to all interfaces (in
    /// that order, so no unfiltered packet is ever queued).
    pub fn open(geometry: RingGeometry, filter: &[sock_filter]) -> Result<Self, CaptureError> {
        if geometry.block_bytes < FRAME_BYTES
            || !geometry.block_bytes.is_multiple_of(FRAME_BYTES)
            || geometry.block_count == 0
        {
            return Err(CaptureError::BadGeometry(geometry));
        }
        // SAFETY: plain socket(2); protocol 0 receives nothing until bind.
        let raw = check(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "open AF_PACKET socket (needs CAP_NET_RAW)",
        )?;
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version = libc::tpacket_versions::TPACKET_V3 as c_int;
        set_option(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "select TPACKET_V3",
        )?;
        attach_filter(raw, filter)?;
        let request = libc::tpacket_req3 {
            tp_block_size: geometry.block_bytes,
            tp_block_nr: geometry.block_count,
            tp_frame_size: FRAME_BYTES,
            tp_frame_nr: geometry.block_bytes / FRAME_BYTES * geometry.block_count,
            tp_retire_blk_tov: BLOCK_RETIRE_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_option(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &request,
            "set up the RX ring",
        )?;
        let length = geometry.block_bytes as usize * geometry.block_count as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(CaptureError::Syscall {
                what: "map the RX ring",
                source: io::Error::last_os_error(),
            });
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or(CaptureError::Syscall {
            what: "map the RX ring",
            source: io::Error::other("null mapping"),
        })?;
        let ring = PacketRing {
            fd,
            map,
            geometry,
            next_block: 0,
        };
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind reads.
        let mut address: libc::sockaddr_ll = unsafe { zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        address.sll_ifindex = 0; // every interface
        // SAFETY: `address` is a valid sockaddr_ll of the given length.
        let ret = unsafe {
            libc::bind(
                raw,
                (&address as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as socklen_t,
            )
        };
        check(ret, "bind to all interfaces")?;
        Ok(ring)
    }

    fn block_desc(&self, index: usize) -> *mut libc::tpacket_block_desc {
        // SAFETY: index < block_count, so the offset stays inside the mapping.
        unsafe {
            self.map
                .as_ptr()
                .add(index * self.geometry.block_bytes as usize)
                .cast()
        }
    }

    fn block_status(&self, index: usize) -> &AtomicU32 {
        let desc = self.block_desc(index);
        // SAFETY: block_status is an aligned u32 the kernel and we hand over through; the
        // atomic view gives the acquire/release ordering the hand-over needs.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*desc).hdr.bh1.block_status)) }
    }

    /// Waits up to `timeout` for the next block and calls `each` for every packet in it,
    /// then returns the block to the kernel. Returns the number of packets seen.
    pub fn next_block(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(RingPacket<'_>),
    ) -> Result<usize, CaptureError> {
        let index = self.next_block;
        if self.block_status(index).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            let mut pollfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            let millis = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
            // SAFETY: one valid pollfd.
            let ret = unsafe { libc::poll(&mut pollfd, 1, millis) };
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    return Ok(0);
                }
                return Err(CaptureError::Syscall {
                    what: "poll the ring",
                    source: err,
                });
            }
            if self.block_status(index).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return Ok(0);
            }
        }
        let block_bytes = self.geometry.block_bytes as usize;
        // SAFETY: the block is ours (TP_STATUS_USER) until we store TP_STATUS_KERNEL below;
        // nothing else reads or writes it meanwhile.
        let block = unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(index * block_bytes), block_bytes)
        };
        let seen = walk_block(block, &mut each);
        self.block_status(index)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next_block = (index + 1) % self.geometry.block_count as usize;
        Ok(seen)
    }

    /// Reads and resets the kernel's counters (PACKET_STATISTICS).
    pub fn stats(&self) -> Result<KernelStats, CaptureError> {
        // SAFETY: zeroed tpacket_stats_v3 is valid; getsockopt writes at most `len` bytes.
        let mut stats: libc::tpacket_stats_v3 = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as socklen_t;
        let ret = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats_v3).cast::<c_void>(),
                &mut len,
            )
        };
        check(ret, "read PACKET_STATISTICS")?;
        Ok(KernelStats {
            packets: stats.tp_packets,
            drops: stats.tp_drops,
            freezes: stats.tp_freeze_q_cnt,
        })
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        let length = self.geometry.block_bytes as usize * self.geometry.block_count as usize;
        // SAFETY: unmaps exactly what `open` mapped; the fd closes after.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), length);
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// Field offsets of the kernel's V3 structures (linux/if_packet.h), checked in tests.
mod layout {
    pub const BLOCK_NUM_PKTS: usize = 12;
    pub const BLOCK_OFFSET_TO_FIRST_PKT: usize = 16;
    pub const HDR_NEXT_OFFSET: usize = 0;
    pub const HDR_SEC: usize = 4;
    pub const HDR_NSEC: usize = 8;
    pub const HDR_SNAPLEN: usize = 12;
    pub const HDR_MAC: usize = 24;
    pub const HDR_NET: usize = 26;
    /// TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): where the sockaddr_ll starts.
    pub const SOCKADDR_LL: usize = 48;
    pub const LL_IFINDEX: usize = 4;
    pub const LL_HATYPE: usize = 8;
    pub const LL_PKTTYPE: usize = 10;
}

/// Walks the packets of one block, bounds-checking every offset the kernel wrote.
fn walk_block(block: &[u8], each: &mut impl FnMut(RingPacket<'_>)) -> usize {
    use layout::*;
    let count = read_u32(block, BLOCK_NUM_PKTS).unwrap_or(0);
    let mut offset = read_u32(block, BLOCK_OFFSET_TO_FIRST_PKT).unwrap_or(0) as usize;
    let mut seen = 0;
    for _ in 0..count {
        let Some(header) = block.get(offset..) else {
            break;
        };
        let (Some(next), Some(snaplen), Some(mac), Some(net)) = (
            read_u32(header, HDR_NEXT_OFFSET),
            read_u32(header, HDR_SNAPLEN),
            read_u16(header, HDR_MAC),
            read_u16(header, HDR_NET),
        ) else {
            break;
        };
        let timestamp_ms = u64::from(read_u32(header, HDR_SEC).unwrap_or(0)) * 1000
            + u64::from(read_u32(header, HDR_NSEC).unwrap_or(0)) / 1_000_000;
        let (Some(ifindex), Some(hatype), Some(pkttype)) = (
            read_u32(header, SOCKADDR_LL + LL_IFINDEX),
            read_u16(header, SOCKADDR_LL + LL_HATYPE),
            header.get(SOCKADDR_LL + LL_PKTTYPE).copied(),
        ) else {
            break;
        };
        let (mac, net) = (usize::from(mac), usize::from(net));
        if let Some(data) = header.get(mac..mac + snaplen as usize) {
            each(RingPacket {
                data,
                network_offset: net.saturating_sub(mac),
                ifindex: ifindex as i32,
                hatype,
                pkttype,
                timestamp_ms,
            });
            seen += 1;
        }
        if next == 0 {
            break;
        }
        offset += next as usize;
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::layout::*;
    use super::*;

    #[test]
    fn layout_matches_the_kernel_structures() {
        assert_eq!(
            offset_of!(libc::tpacket_hdr_v1, num_pkts) + 8,
            BLOCK_NUM_PKTS
        );
        assert_eq!(
            offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt) + 8,
            BLOCK_OFFSET_TO_FIRST_PKT
        );
        assert_eq!(offset_of!(libc::tpacket_block_desc, hdr), 8);
        assert_eq!(
            offset_of!(libc::tpacket3_hdr, tp_next_offset),
            HDR_NEXT_OFFSET
        );
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_sec), HDR_SEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_nsec), HDR_NSEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), HDR_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), HDR_MAC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_net), HDR_NET);
        assert_eq!(
            size_of::<libc::tpacket3_hdr>().next_multiple_of(16),
            SOCKADDR_LL
        );
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_ifindex), LL_IFINDEX);
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_hatype), LL_HATYPE);
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_pkttype), LL_PKTTYPE);
    }

    /// Writes a block the way the kernel does: descriptor, then packets chained by offset.
    fn block_with(packets: &[&[u8]], lie_about_count: u32) -> Vec<u8> {
        let mut block = vec![0u8; 4096];
        let first = 64usize;
        block[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4]
            .copy_from_slice(&(packets.len() as u32 + lie_about_count).to_ne_bytes());
        block[BLOCK_OFFSET_TO_FIRST_PKT..BLOCK_OFFSET_TO_FIRST_PKT + 4]
            .copy_from_slice(&(first as u32).to_ne_bytes());
        let mut at = first;
        for (i, p) in packets.iter().enumerate() {
            let mac = 80usize;
            let next = if i + 1 == packets.len() {
                0
            } else {
                (mac + p.len()).next_multiple_of(16)
            };
            block[at..at + 4].copy_from_slice(&(next as u32).to_ne_bytes());
            block[at + HDR_SEC..at + HDR_SEC + 4].copy_from_slice(&1_700_000_000u32.to_ne_bytes());
            block[at + HDR_NSEC..at + HDR_NSEC + 4].copy_from_slice(&250_000_000u32.to_ne_bytes());
            block[at + HDR_SNAPLEN..at + HDR_SNAPLEN + 4]
                .copy_from_slice(&(p.len() as u32).to_ne_bytes());
            block[at + HDR_MAC..at + HDR_MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            block[at + HDR_NET..at + HDR_NET + 2].copy_from_slice(&(mac as u16 + 14).to_ne_bytes());
            block[at + SOCKADDR_LL + LL_IFINDEX..at + SOCKADDR_LL + LL_IFINDEX + 4]
                .copy_from_slice(&7i32.to_ne_bytes());
            block[at + SOCKADDR_LL + LL_PKTTYPE] = libc::PACKET_OUTGOING;
            block[at + mac..at + mac + p.len()].copy_from_slice(p);
            at += next;
        }
        block
    }

    #[test]
    fn packets_are_walked_in_order() {
        let block = block_with(&[b"first packet", b"second"], 0);
        let mut seen = Vec::new();
        let n = walk_block(&block, &mut |p: RingPacket<'_>| {
            assert_eq!(
                (p.ifindex, p.pkttype, p.network_offset),
                (7, libc::PACKET_OUTGOING, 14)
            );
            assert_eq!(p.timestamp_ms, 1_700_000_000_250);
            seen.push(p.data.to_vec());
        });
        assert_eq!(n, 2);
        assert_eq!(seen, vec![b"first packet".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn a_lying_block_never_reads_out_of_bounds() {
        let mut block = block_with(&[b"one"], 1000);
        assert_eq!(walk_block(&block, &mut |_| {}), 1);
        block[64 + HDR_SNAPLEN..64 + HDR_SNAPLEN + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(walk_block(&block, &mut |_| {}), 0);
        block[BLOCK_OFFSET_TO_FIRST_PKT..BLOCK_OFFSET_TO_FIRST_PKT + 4]
            .copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(walk_block(&block, &mut |_| {}), 0);
    }
}
