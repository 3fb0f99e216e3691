/* The few kernel types and helpers sockets.bpf.c reads, declared by hand instead of a
 * generated vmlinux.h, so that the object builds the same on any machine. Every struct is
 * marked preserve_access_index: the loader moves each field access to the offset the running
 * kernel's BTF gives, so only the names here must match the kernel, not the layouts (the
 * verifier then checks each access against the kernel's own types, the iterator's context
 * included). */
#ifndef TRAFFICMAP_KERNEL_H
#define TRAFFICMAP_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))

struct seq_file;

struct in6_addr {
	__u8 s6_addr[16];
} CORE;

struct ns_common {
	unsigned int inum;
} CORE;

struct net {
	struct ns_common ns;
} CORE;

typedef struct CORE {
	struct net *net;
} possible_net_t;

struct proto {
	char name[32];
} CORE;

struct sock_common {
	__u32 skc_daddr;
	__u32 skc_rcv_saddr;
	__u16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct proto *skc_prot;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} CORE;

struct sock {
	struct sock_common __sk_common;
} CORE;

struct socket {
	struct sock *sk;
} CORE;

struct inode {
	unsigned long i_ino;
} CORE;

struct file {
	struct inode *f_inode;
} CORE;

struct task_struct {
	int tgid;
} CORE;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} CORE;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} CORE;

/* Helpers, by their numbers in include/uapi/linux/bpf.h. */
static long (*const bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*const bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;
static struct socket *(*const bpf_sock_from_file)(struct file *file) = (void *)162;

#endif
