/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A minimal rtnetlink client for the CNI plugin's per-pod hot path (ADD and
 * DEL), so that path never pays for importing pyroute2.
 *
 * Like mc_bpf.h, this header is fed verbatim (minus preprocessor lines) to
 * cffi's cdef: plain declarations, stdint types, no macros in declarations.
 *
 * A netlink socket acts in the network namespace it was opened in, whatever
 * namespace the calling thread is in later: open the pod's socket while the
 * thread is inside the pod namespace, then use it from anywhere.
 *
 * Every request carries NLM_F_ACK and waits for the kernel's answer to its
 * own sequence number, so every call returns 0 (or a positive value where
 * documented) or the kernel's -errno (-EEXIST, -ENODEV, ...). Never prints.
 */
#ifndef MESHCNI_CSRC_MC_NL_H
#define MESHCNI_CSRC_MC_NL_H

#include <stdint.h>

struct mc_nl_link {
	int32_t index;
	uint32_t mtu;
	uint32_t flags;     /* ifi_flags: IFF_UP = 1 */
	uint8_t mac[6];
	uint8_t pad[2];
	char kind[16];      /* IFLA_INFO_KIND ("veth"), "" when none */
	char name[16];
};

/* NETLINK_ROUTE socket in the calling thread's netns: fd >= 0 or -errno */
int mc_nl_open(void);
void mc_nl_close(int nl);

/* veth name <-> peer; the peer is created inside the namespace peer_netns_fd
 * refers to (-1: the socket's own). mtu (0: kernel default) on both ends. */
int mc_nl_veth_create(int nl, const char *name, const char *peer,
		      int peer_netns_fd, uint32_t mtu);
/* ifindex (> 0) of name, or -ENODEV */
int mc_nl_link_index(int nl, const char *name);
int mc_nl_link_get(int nl, int ifindex, struct mc_nl_link *out);
/* up: 1 = up, 0 = down, -1 = leave as is; mtu 0 = leave as is */
int mc_nl_link_set(int nl, int ifindex, int up, uint32_t mtu);
int mc_nl_link_del(int nl, int ifindex);

/* family AF_INET (addr of 4 bytes) or AF_INET6 (16 bytes) in what follows */
int mc_nl_addr_add(int nl, int ifindex, int family, const uint8_t *addr,
		   uint8_t prefixlen, uint32_t ifa_flags);
/* dst NULL = the default route; gw NULL = none; oif 0 = none; scope is
 * rtm_scope (RT_SCOPE_LINK = 253); replace != 0: NLM_F_REPLACE, else EXCL */
int mc_nl_route_add(int nl, int family, const uint8_t *dst, uint8_t dst_len,
		    const uint8_t *gw, int oif, uint8_t scope, int replace);
/* state is ndm_state (NUD_PERMANENT = 0x80) */
int mc_nl_neigh_add(int nl, int ifindex, int family, const uint8_t *addr,
		    const uint8_t *mac, uint16_t state);

#endif
