/* trafficmap's socket scan in one pass: a task iterator that walks each process's table of
 * open files and writes one record for every TCP or UDP socket (IPv4 or IPv6) in it, in any
 * network namespace, with the inode number of the socket's namespace. sock_diag and
 * /proc/net/tcp answer for one namespace at a time, and with the kernel's defaults each of
 * those answers walks the TCP hash table that all namespaces share; this walks the processes'
 * open files once.
 *
 * The program reads each fd table itself (bpf_loop) rather than through a task_file iterator,
 * which takes a lock and a reference for every open file of the node: without them the cache
 * misses of one socket overlap those of the next, and a scan takes a third of the time.
 *
 * Records go to the `pass_records` map, not to the iterator's output, which holds at most 32 KiB
 * per process. When the map is full the program notes where it stopped in `pass_control`, and the
 * sniffer reads the records and runs the iterator again from there (a pass).
 *
 * The record and control layouts are read by sniffer/src/scan/bpf.rs; change both together.
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
#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define SOCKFS_MAGIC 0x534F434B
/* Records per pass: 16384 x 52 bytes, 832 KiB. */
#define CAPACITY 16384

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

/* Set by the sniffer before each pass; `count`, `full` and the resume point set by the pass.
 * The iterator visits tasks in the order of their ids in the sniffer's PID namespace, so a
 * pass resumes at (resume_tid, resume_fd), by that id, and skips every task before it. */
struct control {
	__u32 resume_tid; /* first task to read */
	__u32 resume_fd;  /* first fd to read in that task */
	__u32 count;      /* records written in this pass */
	__u32 full;       /* 1: the pass stopped at the resume point with the map full */
};

struct batch {
	struct record records[CAPACITY];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct control);
} pass_control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct batch);
} pass_records SEC(".maps");

/* TCP or UDP from the name of the socket's protocol ("TCP", "TCPv6", "UDP", "UDPv6"); 0 for
 * any other (UDP-Lite, MPTCP, SCTP, ping). The proto structs are shared by every socket, so
 * this read stays in cache where sk_protocol would cost a miss per socket. */
static __u8 protocol_of(const struct proto *prot)
{
	const char *name = prot->name;
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

/* One process's fd table, walked by bpf_loop from fd `first`. */
struct walk {
	struct file **fds;
	struct control *control;
	struct batch *batch;
	__u32 pid;
	__u32 tid;
	__u32 first;
};

static long visit_fd(__u32 index, struct walk *walk)
{
	__u32 fd = walk->first + index;
	struct file *slot = 0;
	if (bpf_probe_read_kernel(&slot, sizeof(slot), &walk->fds[fd]) || !slot)
		return 0;
	struct file *file = rdonly_cast(slot, kernel_type_id(struct file));
	struct inode *inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK || inode->i_sb->s_magic != SOCKFS_MAGIC)
		return 0;
	struct socket *socket = rdonly_cast(file->private_data, kernel_type_id(struct socket));
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

	struct control *control = walk->control;
	__u32 count = control->count;
	if (count >= CAPACITY) {
		control->full = 1;
		control->resume_tid = walk->tid;
		control->resume_fd = fd;
		return 1;
	}
	struct record *record = &walk->batch->records[count];
	record->netns = sk->__sk_common.skc_net.net->ns.inum;
	record->pid = walk->pid;
	record->inode = (__u32)inode->i_ino;
	record->family = family;
	record->protocol = protocol;
	record->state = state;
	record->reserved = 0;
	record->local_port = sk->__sk_common.skc_num;
	record->remote_port = swap16(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		__u32 local = sk->__sk_common.skc_rcv_saddr;
		__u32 remote = sk->__sk_common.skc_daddr;
		__builtin_memset(record->local, 0, sizeof(record->local));
		__builtin_memset(record->remote, 0, sizeof(record->remote));
		__builtin_memcpy(record->local, &local, 4);
		__builtin_memcpy(record->remote, &remote, 4);
	} else {
		struct in6_addr local = sk->__sk_common.skc_v6_rcv_saddr;
		struct in6_addr remote = sk->__sk_common.skc_v6_daddr;
		__builtin_memcpy(record->local, &local, 16);
		__builtin_memcpy(record->remote, &remote, 16);
	}
	control->count = count + 1;
	return 0;
}

/* The task's id in the PID namespace of the sniffer, which orders the iterator's tasks:
 * task->thread_pid->numbers[level].nr, with the level of the sniffer's namespace. The index
 * varies, so the entry is read with bpf_probe_read_kernel (once per task, not per socket). */
static __u32 id_in_our_namespace(struct task_struct *task)
{
	__u32 level = bpf_get_current_task_btf()->thread_pid->level;
	__u64 pid = 0;
	int nr = 0;
	if (bpf_probe_read_kernel(&pid, sizeof(pid), &task->thread_pid) || !pid)
		return 0;
	__u64 entry = pid + field_offset(struct pid, numbers) + (__u64)level * type_size(struct upid);
	bpf_probe_read_kernel(&nr, sizeof(nr), (const void *)(entry + field_offset(struct upid, nr)));
	return nr;
}

SEC("iter/task")
int dump_sockets(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	__u32 zero = 0;
	if (!task)
		return 0;
	struct control *control = bpf_map_lookup_elem(&pass_control, &zero);
	struct batch *batch = bpf_map_lookup_elem(&pass_records, &zero);
	if (!control || !batch || control->full)
		return 0;
	struct files_struct *files = task->files;
	/* Threads share their leader's table: read it once, as the leader's. */
	if (!files || (task->pid != task->tgid && files == task->group_leader->files))
		return 0;
	__u32 tid = id_in_our_namespace(task);
	if (tid < control->resume_tid)
		return 0;
	__u32 first = tid == control->resume_tid ? control->resume_fd : 0;
	struct fdtable *fdt = files->fdt;
	if (!fdt)
		return 0;
	__u32 max_fds = fdt->max_fds;
	if (first >= max_fds)
		return 0;
	struct walk walk = {
		.fds = fdt->fd,
		.control = control,
		.batch = batch,
		.pid = task->tgid,
		.tid = tid,
		.first = first,
	};
	bpf_loop(max_fds - first, visit_fd, &walk, 0);
	return 0;
}
