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

struct super_block {
	unsigned long s_magic;
} CORE;

struct inode {
	unsigned short i_mode;
	struct super_block *i_sb;
	unsigned long i_ino;
} CORE;

struct file {
	struct inode *f_inode;
	void *private_data;
} CORE;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} CORE;

struct files_struct {
	struct fdtable *fdt;
} CORE;

struct upid {
	int nr;
} CORE;

struct pid {
	unsigned int level;
	struct upid numbers[1];
} CORE;

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *group_leader;
	struct files_struct *files;
	struct pid *thread_pid;
} CORE;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} CORE;

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} CORE;

/* BTF-defined maps, as libbpf's bpf_helpers.h spells them. */
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define BPF_MAP_TYPE_ARRAY 2

/* CO-RE: a field's offset, a type's size and a type's BTF id, in the running kernel. */
#define field_offset(type, field) __builtin_preserve_field_info(((type *)0)->field, 0)
#define type_size(type) __builtin_preserve_type_info(*(type *)0, 1)
#define kernel_type_id(type) __builtin_btf_type_id(*(type *)0, 1)

/* The kfunc bpf_rdonly_cast(obj, btf_id) (Linux 6.2): `obj` as a read-only pointer to the
 * kernel type `btf_id`, whose fields the program may then load directly. The loader we use
 * (aya) does not resolve kfuncs, so the call is written as a raw instruction (a kfunc call,
 * src_reg 2) with the placeholder id 0x7ffffff0, which the sniffer replaces with the running
 * kernel's BTF id of the kfunc before loading (sniffer/src/scan/bpf.rs: KFUNC_CALL; keep the
 * two in step). */
#define RDONLY_CAST_CALL ".8byte 0x7ffffff000002085"
static inline __attribute__((always_inline)) void *rdonly_cast(const void *obj, __u32 btf_id)
{
	void *result;
	asm volatile("r1 = %[obj]\n\tr2 = %[id]\n\t" RDONLY_CAST_CALL "\n\t%[result] = r0"
		     : [result] "=r"(result)
		     : [obj] "r"(obj), [id] "r"(btf_id)
		     : "r0", "r1", "r2", "r3", "r4", "r5");
	return result;
}

/* Helpers, by their numbers in include/uapi/linux/bpf.h. */
static long (*const bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static void *(*const bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static struct task_struct *(*const bpf_get_current_task_btf)(void) = (void *)158;
static long (*const bpf_loop)(__u32 nr_loops, void *callback, void *ctx, __u64 flags) = (void *)181;

#endif
