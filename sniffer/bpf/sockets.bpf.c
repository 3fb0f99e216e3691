/* trafficmap's socket scan in one pass: a task_file iterator that writes one record for every
 * TCP or UDP socket (IPv4 or IPv6) open in any process, in any network namespace, with the
 * inode number of the socket's namespace. sock_diag and /proc/net/tcp answer for one
 * namespace at a time, and with the kernel's defaults each of those answers walks the TCP
 * hash table that all namespaces share; this walks the processes' open files once.
 *
 * The record layout is read by sniffer/src/scan/bpf.rs; change both together.
 * Rebuild with `make bpf` (clang), which also checks that the committed object is current. */
#include "kernel.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define PROTOCOL_TCP 6
#define PROTOCOL_UDP 17
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

struct record {
	__u32 netns;
	__u32 pid;
	__u32 inode;
	__u8 family;
	__u8 protocol;
	__u8 state;
	__u8 reserved;
	__u16 local_port;
	__u16 remote_port;
	__u8 local[16];
	__u8 remote[16];
};

/* TCP or UDP from the name of the socket's protocol ("TCP", "TCPv6", "UDP", "UDPv6"); 0 for
 * any other (UDP-Lite, MPTCP, SCTP, ping). The proto structs are shared by every socket, so
 * this read stays in cache where sk_protocol would cost a miss per socket. */
static __u8 protocol_of(const struct proto *prot)
{
	char name[6] = {};
	if (bpf_probe_read_kernel(name, sizeof(name), prot->name))
		return 0;
	__u8 protocol;
	if (name[0] == 'T' && name[1] == 'C' && name[2] == 'P')
		protocol = PROTOCOL_TCP;
	else if (name[0] == 'U' && name[1] == 'D' && name[2] == 'P')
		protocol = PROTOCOL_UDP;
	else
		return 0;
	if (name[3] == 0 || (name[3] == 'v' && name[4] == '6' && name[5] == 0))
		return protocol;
	return 0;
}

/* The states sock_diag is asked for: TCP connected, connecting or listening; UDP connected or
 * bound. */
static int wanted(__u8 protocol, __u8 state)
{
	if (protocol == PROTOCOL_TCP)
		return state == TCP_ESTABLISHED || state == TCP_SYN_SENT || state == TCP_LISTEN;
	return state == TCP_ESTABLISHED || state == TCP_CLOSE;
}

static __u16 swap16(__u16 value)
{
	return (__u16)((value >> 8) | (value << 8));
}

SEC("iter/task_file")
int dump_sockets(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	if (!file || !task)
		return 0;
	struct socket *socket = bpf_sock_from_file(file);
	if (!socket)
		return 0;
	struct sock *sk = socket->sk;
	if (!sk)
		return 0;
	unsigned short family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u8 state = sk->__sk_common.skc_state;
	__u8 protocol = protocol_of(sk->__sk_common.skc_prot);
	if (!protocol || !wanted(protocol, state))
		return 0;

	struct record record = {};
	record.netns = sk->__sk_common.skc_net.net->ns.inum;
	record.pid = task->tgid;
	record.inode = (__u32)file->f_inode->i_ino;
	record.family = family;
	record.protocol = protocol;
	record.state = state;
	record.local_port = sk->__sk_common.skc_num;
	record.remote_port = swap16(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		__u32 local = sk->__sk_common.skc_rcv_saddr;
		__u32 remote = sk->__sk_common.skc_daddr;
		__builtin_memcpy(record.local, &local, 4);
		__builtin_memcpy(record.remote, &remote, 4);
	} else {
		bpf_probe_read_kernel(record.local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(record.remote, 16, &sk->__sk_common.skc_v6_daddr);
	}
	bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
	return 0;
}
