// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Socket-level Service load balancer (cgroup v2 sock_addr hooks).
 *
 * connect/sendmsg rewrite a frontend to a chosen backend before the socket
 * ever builds a packet, so no per-packet NAT is needed; recvmsg/getpeername
 * turn the backend back into the frontend so applications only ever see the
 * service address. A frontend with no backends is refused with ECONNREFUSED
 * (bpf_set_retval, kernel >= 5.18; otherwise the kernel reports EPERM).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps_def.h"
#include "lib/lb.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1

static __always_inline int proto_ok(__u32 proto)
{
	return proto == MC_IPPROTO_TCP || proto == MC_IPPROTO_UDP;
}

static __always_inline int finish(int rc)
{
	if (rc == MC_LB_REFUSE) {
		bpf_set_retval(-MC_ECONNREFUSED);
		return SYS_REJECT;
	}
	return SYS_PROCEED;
}

static __always_inline int xlate4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4]; /* u32s: the verifier wants aligned stack words */
	__be16 port = (__be16)ctx->user_port;
	int rc;

	if (!proto_ok(ctx->protocol))
		return SYS_PROCEED;
	mc_addr_from_ip4(addr, ctx->user_ip4);
	rc = mc_lb_xlate(ctx, (__u8 *)addr, &port, ctx->protocol);
	if (rc == MC_LB_XLATED) {
		__u32 *w = addr;

		/* a v4 socket can only reach a v4 backend */
		if (w[0] || w[1] || w[2] != bpf_htonl(0x0000ffff))
			return finish(MC_LB_REFUSE);
		ctx->user_ip4 = w[3];
		ctx->user_port = (__u32)port;
	}
	return finish(rc);
}

static __always_inline int xlate6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__be16 port = (__be16)ctx->user_port;
	int rc;

	if (!proto_ok(ctx->protocol))
		return SYS_PROCEED;
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	rc = mc_lb_xlate(ctx, (__u8 *)addr, &port, ctx->protocol);
	if (rc == MC_LB_XLATED) {
		/* a v4 backend is written as ::ffff:a.b.c.d, which a dual-stack
		 * v6 socket connects to over IPv4 */
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
		ctx->user_port = (__u32)port;
	}
	return finish(rc);
}

static __always_inline int revnat4(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__be16 port = (__be16)ctx->user_port;

	mc_addr_from_ip4(addr, ctx->user_ip4);
	if (mc_lb_revnat(ctx, (__u8 *)addr, &port)) {
		ctx->user_ip4 = addr[3];
		ctx->user_port = (__u32)port;
	}
	return SYS_PROCEED;
}

static __always_inline int revnat6(struct bpf_sock_addr *ctx)
{
	__u32 addr[4];
	__be16 port = (__be16)ctx->user_port;

	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	if (mc_lb_revnat(ctx, (__u8 *)addr, &port)) {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
		ctx->user_port = (__u32)port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int mc_sock_connect4(struct bpf_sock_addr *ctx) { return xlate4(ctx); }

SEC("cgroup/sendmsg4")
int mc_sock_sendmsg4(struct bpf_sock_addr *ctx) { return xlate4(ctx); }

SEC("cgroup/recvmsg4")
int mc_sock_recvmsg4(struct bpf_sock_addr *ctx) { return revnat4(ctx); }

SEC("cgroup/getpeername4")
int mc_sock_getpeer4(struct bpf_sock_addr *ctx) { return revnat4(ctx); }

SEC("cgroup/connect6")
int mc_sock_connect6(struct bpf_sock_addr *ctx) { return xlate6(ctx); }

SEC("cgroup/sendmsg6")
int mc_sock_sendmsg6(struct bpf_sock_addr *ctx) { return xlate6(ctx); }

SEC("cgroup/recvmsg6")
int mc_sock_recvmsg6(struct bpf_sock_addr *ctx) { return revnat6(ctx); }

SEC("cgroup/getpeername6")
int mc_sock_getpeer6(struct bpf_sock_addr *ctx) { return revnat6(ctx); }

char LICENSE[] SEC("license") = "Dual MIT/GPL";
