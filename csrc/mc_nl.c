// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Minimal rtnetlink client on a raw AF_NETLINK socket; see mc_nl.h.
 *
 * Written against the uapi headers only: the plugin needs a dozen fixed
 * requests, each answered by one ack (or one reply then an ack), which does
 * not justify a library dependency on every node.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/veth.h>

#include "mc_nl.h"

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

/* the largest request is a veth create: well under 512 bytes */
#define MC_NL_REQ_MAX 1024
/* a RTM_NEWLINK reply with IFLA_AF_SPEC etc. runs to a few KiB */
#define MC_NL_RCV_MAX 32768

struct nlreq {
	union {
		struct nlmsghdr nh;
		char buf[MC_NL_REQ_MAX];
	};
};

static uint32_t mc_nl_seq;

static uint32_t next_seq(void)
{
	/* any value works as long as replies are matched to it; a shared
	 * counter keeps requests on different sockets distinguishable in
	 * traces too */
	return __atomic_add_fetch(&mc_nl_seq, 1, __ATOMIC_RELAXED);
}

static void *req_init(struct nlreq *r, uint16_t type, uint16_t flags,
		      size_t hdrlen)
{
	memset(r, 0, sizeof(*r));
	r->nh.nlmsg_len = NLMSG_LENGTH(hdrlen);
	r->nh.nlmsg_type = type;
	r->nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	return NLMSG_DATA(&r->nh);
}

static struct rtattr *attr_put(struct nlreq *r, uint16_t type,
			       const void *data, size_t len)
{
	size_t off = NLMSG_ALIGN(r->nh.nlmsg_len);
	size_t alen = RTA_LENGTH(len);
	struct rtattr *rta;

	if (off + RTA_ALIGN(alen) > sizeof(r->buf))
		return NULL;
	rta = (struct rtattr *)(r->buf + off);
	rta->rta_type = type;
	rta->rta_len = alen;
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	r->nh.nlmsg_len = off + RTA_ALIGN(alen);
	return rta;
}

static int put_u32(struct nlreq *r, uint16_t type, uint32_t v)
{
	return attr_put(r, type, &v, sizeof(v)) ? 0 : -EMSGSIZE;
}

static int put_str(struct nlreq *r, uint16_t type, const char *s)
{
	return attr_put(r, type, s, strlen(s) + 1) ? 0 : -EMSGSIZE;
}

static struct rtattr *nest_begin(struct nlreq *r, uint16_t type)
{
	return attr_put(r, type, NULL, 0);
}

static void nest_end(struct nlreq *r, struct rtattr *nest)
{
	nest->rta_len = r->buf + r->nh.nlmsg_len - (char *)nest;
}

static int addr_len(int family)
{
	if (family == AF_INET)
		return 4;
	if (family == AF_INET6)
		return 16;
	return -EAFNOSUPPORT;
}

static int check_ifname(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	return n == 0 || n >= IFNAMSIZ ? -EINVAL : 0;
}

typedef int (*reply_fn)(const struct nlmsghdr *nh, void *ctx);

/*
 * Send one request and read until the kernel's ack for its sequence number;
 * replies to it before the ack go to on_reply. Messages for other sequence
 * numbers (a previous call that gave up) are skipped, never mistaken for
 * this call's answer.
 */
static int talk(int nl, struct nlreq *r, reply_fn on_reply, void *ctx)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	char buf[MC_NL_RCV_MAX] __attribute__((aligned(NLMSG_ALIGNTO)));
	uint32_t seq = next_seq();
	int cb_err = 0;
	ssize_t n;

	r->nh.nlmsg_seq = seq;
	do {
		n = sendto(nl, r->buf, r->nh.nlmsg_len, 0,
			   (struct sockaddr *)&kernel, sizeof(kernel));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if ((size_t)n != r->nh.nlmsg_len)
		return -EIO;

	for (;;) {
		struct sockaddr_nl from;
		socklen_t fromlen = sizeof(from);
		struct nlmsghdr *nh;
		size_t len;

		n = recvfrom(nl, buf, sizeof(buf), MSG_TRUNC,
			     (struct sockaddr *)&from, &fromlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if ((size_t)n > sizeof(buf))
			return -EMSGSIZE;
		if (from.nl_pid != 0)  /* only the kernel speaks to us */
			continue;
		len = n;
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
		     nh = NLMSG_NEXT(nh, len)) {
			if (nh->nlmsg_seq != seq)
				continue;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(nh);

				if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(int)))
					return -EBADMSG;
				if (e->error)
					return e->error;
				return cb_err;
			}
			if (nh->nlmsg_type == NLMSG_DONE)
				return cb_err;
			if (on_reply && !cb_err)
				cb_err = on_reply(nh, ctx);
		}
	}
}

int mc_nl_open(void)
{
	struct sockaddr_nl local = { .nl_family = AF_NETLINK };
	int one = 1;
	int fd;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	/* acks need not echo the whole request back */
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

void mc_nl_close(int nl)
{
	if (nl >= 0)
		close(nl);
}

int mc_nl_veth_create(int nl, const char *name, const char *peer,
		      int peer_netns_fd, uint32_t mtu)
{
	struct nlreq r;
	struct ifinfomsg *ifi, *pifi;
	struct rtattr *linkinfo, *data, *peerinfo;
	int err;

	if (check_ifname(name) || check_ifname(peer))
		return -EINVAL;
	ifi = req_init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	if ((err = put_str(&r, IFLA_IFNAME, name)))
		return err;
	if (mtu && (err = put_u32(&r, IFLA_MTU, mtu)))
		return err;
	if (!(linkinfo = nest_begin(&r, IFLA_LINKINFO)))
		return -EMSGSIZE;
	if ((err = put_str(&r, IFLA_INFO_KIND, "veth")))
		return err;
	if (!(data = nest_begin(&r, IFLA_INFO_DATA)))
		return -EMSGSIZE;
	/* VETH_INFO_PEER's payload is a whole ifinfomsg followed by the
	 * peer's own attributes */
	if (!(peerinfo = attr_put(&r, VETH_INFO_PEER, NULL, sizeof(*pifi))))
		return -EMSGSIZE;
	pifi = RTA_DATA(peerinfo);
	memset(pifi, 0, sizeof(*pifi));
	pifi->ifi_family = AF_UNSPEC;
	if ((err = put_str(&r, IFLA_IFNAME, peer)))
		return err;
	if (mtu && (err = put_u32(&r, IFLA_MTU, mtu)))
		return err;
	if (peer_netns_fd >= 0 &&
	    (err = put_u32(&r, IFLA_NET_NS_FD, (uint32_t)peer_netns_fd)))
		return err;
	nest_end(&r, peerinfo);
	nest_end(&r, data);
	nest_end(&r, linkinfo);
	return talk(nl, &r, NULL, NULL);
}

static int parse_link(const struct nlmsghdr *nh, void *ctx)
{
	struct mc_nl_link *out = ctx;
	const struct ifinfomsg *ifi = NLMSG_DATA(nh);
	struct rtattr *rta;
	int len;

	if (nh->nlmsg_type != RTM_NEWLINK ||
	    nh->nlmsg_len < NLMSG_LENGTH(sizeof(*ifi)))
		return -EBADMSG;
	memset(out, 0, sizeof(*out));
	out->index = ifi->ifi_index;
	out->flags = ifi->ifi_flags;
	len = nh->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi));
	for (rta = IFLA_RTA(ifi); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
		size_t plen = RTA_PAYLOAD(rta);

		switch (rta->rta_type) {
		case IFLA_IFNAME:
			memcpy(out->name, RTA_DATA(rta),
			       plen < sizeof(out->name) ? plen : sizeof(out->name) - 1);
			break;
		case IFLA_MTU:
			if (plen >= 4)
				memcpy(&out->mtu, RTA_DATA(rta), 4);
			break;
		case IFLA_ADDRESS:
			if (plen == sizeof(out->mac))
				memcpy(out->mac, RTA_DATA(rta), plen);
			break;
		case IFLA_LINKINFO: {
			struct rtattr *in = RTA_DATA(rta);
			int ilen = plen;

			for (; RTA_OK(in, ilen); in = RTA_NEXT(in, ilen)) {
				size_t kl = RTA_PAYLOAD(in);

				if (in->rta_type != IFLA_INFO_KIND)
					continue;
				memcpy(out->kind, RTA_DATA(in),
				       kl < sizeof(out->kind) ? kl : sizeof(out->kind) - 1);
			}
			break;
		}
		}
	}
	out->name[sizeof(out->name) - 1] = 0;
	out->kind[sizeof(out->kind) - 1] = 0;
	return 0;
}

static int get_link(int nl, int ifindex, const char *name, struct mc_nl_link *out)
{
	struct nlreq r;
	struct ifinfomsg *ifi;
	int err;

	ifi = req_init(&r, RTM_GETLINK, 0, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	if (name && (err = put_str(&r, IFLA_IFNAME, name)))
		return err;
	/* counters and per-VF data are of no use here and inflate the reply */
	if ((err = put_u32(&r, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)))
		return err;
	out->index = 0;
	err = talk(nl, &r, parse_link, out);
	if (!err && out->index <= 0)
		return -EBADMSG;
	return err;
}

int mc_nl_link_index(int nl, const char *name)
{
	struct mc_nl_link l;
	int err;

	if (check_ifname(name))
		return -EINVAL;
	err = get_link(nl, 0, name, &l);
	return err ? err : l.index;
}

int mc_nl_link_get(int nl, int ifindex, struct mc_nl_link *out)
{
	if (ifindex <= 0)
		return -EINVAL;
	return get_link(nl, ifindex, NULL, out);
}

int mc_nl_link_set(int nl, int ifindex, int up, uint32_t mtu)
{
	struct nlreq r;
	struct ifinfomsg *ifi;
	int err;

	if (ifindex <= 0)
		return -EINVAL;
	ifi = req_init(&r, RTM_NEWLINK, 0, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	if (up >= 0) {
		ifi->ifi_change = IFF_UP;
		ifi->ifi_flags = up ? IFF_UP : 0;
	}
	if (mtu && (err = put_u32(&r, IFLA_MTU, mtu)))
		return err;
	return talk(nl, &r, NULL, NULL);
}

int mc_nl_link_del(int nl, int ifindex)
{
	struct nlreq r;
	struct ifinfomsg *ifi;

	if (ifindex <= 0)
		return -EINVAL;
	ifi = req_init(&r, RTM_DELLINK, 0, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	return talk(nl, &r, NULL, NULL);
}

int mc_nl_addr_add(int nl, int ifindex, int family, const uint8_t *addr,
		   uint8_t prefixlen, uint32_t ifa_flags)
{
	struct nlreq r;
	struct ifaddrmsg *ifa;
	int alen = addr_len(family);
	int err;

	if (alen < 0)
		return alen;
	if (ifindex <= 0 || !addr || prefixlen > alen * 8)
		return -EINVAL;
	ifa = req_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifa));
	ifa->ifa_family = family;
	ifa->ifa_prefixlen = prefixlen;
	ifa->ifa_flags = ifa_flags & 0xff;  /* the rest only fits IFA_FLAGS */
	ifa->ifa_index = ifindex;
	/* IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's,
	 * equal to it on anything but point-to-point links */
	if (!attr_put(&r, IFA_LOCAL, addr, alen) ||
	    !attr_put(&r, IFA_ADDRESS, addr, alen))
		return -EMSGSIZE;
	if (ifa_flags && (err = put_u32(&r, IFA_FLAGS, ifa_flags)))
		return err;
	return talk(nl, &r, NULL, NULL);
}

int mc_nl_route_add(int nl, int family, const uint8_t *dst, uint8_t dst_len,
		    const uint8_t *gw, int oif, uint8_t scope, int replace)
{
	struct nlreq r;
	struct rtmsg *rtm;
	int alen = addr_len(family);
	int err;

	if (alen < 0)
		return alen;
	if (dst_len > alen * 8 || (dst_len && !dst) || oif < 0)
		return -EINVAL;
	rtm = req_init(&r, RTM_NEWROUTE,
		       NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL),
		       sizeof(*rtm));
	rtm->rtm_family = family;
	rtm->rtm_dst_len = dst_len;
	rtm->rtm_table = RT_TABLE_MAIN;
	/* as pyroute2 marked them, so a node upgraded mid-life looks the same */
	rtm->rtm_protocol = RTPROT_STATIC;
	rtm->rtm_scope = scope;
	rtm->rtm_type = RTN_UNICAST;
	if (dst && dst_len && !attr_put(&r, RTA_DST, dst, alen))
		return -EMSGSIZE;
	if (gw && !attr_put(&r, RTA_GATEWAY, gw, alen))
		return -EMSGSIZE;
	if (oif && (err = put_u32(&r, RTA_OIF, (uint32_t)oif)))
		return err;
	return talk(nl, &r, NULL, NULL);
}

int mc_nl_neigh_add(int nl, int ifindex, int family, const uint8_t *addr,
		    const uint8_t *mac, uint16_t state)
{
	struct nlreq r;
	struct ndmsg *ndm;
	int alen = addr_len(family);

	if (alen < 0)
		return alen;
	if (ifindex <= 0 || !addr || !mac)
		return -EINVAL;
	ndm = req_init(&r, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ndm));
	ndm->ndm_family = family;
	ndm->ndm_ifindex = ifindex;
	ndm->ndm_state = state;
	if (!attr_put(&r, NDA_DST, addr, alen) ||
	    !attr_put(&r, NDA_LLADDR, mac, 6))
		return -EMSGSIZE;
	return talk(nl, &r, NULL, NULL);
}
