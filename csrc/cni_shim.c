/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * meshcni-cni, the compiled shim: the CNI plugin executable a container
 * runtime runs for every pod when the agent is installed with --cni-shim.
 *
 * It does no network work itself. It reads the CNI environment and the
 * network config on stdin, finds the agent's local API socket in the
 * config's top-level "agentSocket" field, and hands the call over:
 *
 *     POST /v1/cni HTTP/1.1            (over the unix socket)
 *     {"env": {"CNI_COMMAND": ..., ...}, "stdin": "<config>",
 *      "hostNetns": "dev:ino", "netns": "dev:ino"}
 *
 * The agent runs the plugin logic in-process and answers 200 with the bytes
 * the plugin would have printed as the body and its exit status in the
 * header "Meshcni-Exit-Code"; the shim writes both back unchanged (result
 * JSON on stdout, or error JSON on stdout with exit status 1).
 *
 * Fallback: when the call cannot be handed over -- no agentSocket, a config
 * the shim cannot scan, the socket unreachable (agent restarting), the
 * connection lost before an answer, or any answer other than 200 (409: the
 * agent is in another network namespace or cannot see CNI_NETNS; 404: an
 * agent without /v1/cni) -- the shim execs the Python plugin installed next
 * to it as "meshcni-cni-py" with the same environment and the same stdin
 * (replayed from a memfd). So pods keep working while the agent is down.
 * VERSION is answered by the shim itself. Where no fallback is installed
 * (`meshcni agent --no-cni-fallback`, as the Helm chart runs it: the image's
 * Python does not exist on the host) the shim answers alone instead, see
 * answer_alone().
 *
 * The hand-over is bounded: MESHCNI_CNI_SHIM_TIMEOUT seconds (default 60);
 * past it the shim prints a CNI error (code 11, try again later) and exits 1.
 * The test hooks MESHCNI_CNI_CRASH_AT / MESHCNI_CNI_NETLINK are properties
 * of a plugin process, so with either set the Python plugin runs directly.
 *
 * Plain libc, no allocation beyond a few buffers, never prints anything but
 * the CNI answer on stdout (diagnostics go to stderr, which runtimes log).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FALLBACK_NAME "meshcni-cni-py"
#define MAX_STDIN (16u << 20)
#define MAX_RESPONSE (16u << 20)
#define DEFAULT_TIMEOUT_S 60.0
#define CONNECT_TIMEOUT_S 5

/* CNI error codes (spec) */
#define E_IO_FAILURE 5
#define E_TRY_AGAIN_LATER 11
#define E_PLUGIN_UNAVAILABLE 50

static const char *const SUPPORTED[] = {"0.4.0", "1.0.0", "1.1.0"};
static const char CURRENT[] = "1.1.0";
static const char *const ENV_KEYS[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
				       "CNI_IFNAME",  "CNI_ARGS",	 "CNI_PATH"};

struct buf {
	char *p;
	size_t n, cap;
};

static int buf_put(struct buf *b, const void *d, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->n + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

static int buf_puts(struct buf *b, const char *s)
{
	return buf_put(b, s, strlen(s));
}

/* s[0..n) as a quoted JSON string; bytes >= 0x80 pass through (UTF-8) */
static int buf_json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	if (buf_put(b, "\"", 1))
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			if (buf_put(b, esc, 2))
				return -1;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			if (buf_put(b, esc, 6))
				return -1;
		} else if (buf_put(b, &s[i], 1)) {
			return -1;
		}
	}
	return buf_put(b, "\"", 1);
}

static const char *supported_version(const char *v)
{
	for (size_t i = 0; i < sizeof(SUPPORTED) / sizeof(SUPPORTED[0]); i++)
		if (v && strcmp(v, SUPPORTED[i]) == 0)
			return SUPPORTED[i];
	return NULL;
}

/* The CNI error JSON on stdout (as the Python plugin writes it), exit 1. */
static int __attribute__((format(printf, 3, 4))) cni_error(const char *version, int code, const char *fmt, ...)
{
	char msg[1024], num[16];
	struct buf b = {0};
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "meshcni-cni: %s\n", msg);
	snprintf(num, sizeof(num), "%d", code);
	if (buf_puts(&b, "{\"cniVersion\": \"") || buf_puts(&b, version) || buf_puts(&b, "\", \"code\": ") ||
	    buf_puts(&b, num) || buf_puts(&b, ", \"msg\": ") || buf_json_str(&b, msg, strlen(msg)) ||
	    buf_puts(&b, "}\n"))
		return 1;
	fwrite(b.p, 1, b.n, stdout);
	fflush(stdout);
	free(b.p);
	return 1;
}

/* ---- minimal JSON scanning: top-level string fields only ---- */

static const char *ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at '"': past the closing quote, or NULL */
static const char *skip_string(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\') {
			p++;
			continue;
		}
		if (*p == '"')
			return p + 1;
	}
	return NULL;
}

static const char *skip_value(const char *p, const char *e, int depth)
{
	p = ws(p, e);
	if (p >= e || depth > 64)
		return NULL;
	if (*p == '"')
		return skip_string(p, e);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';

		p = ws(p + 1, e);
		if (p < e && *p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				p = ws(p, e);
				if (p >= e || *p != '"' || !(p = skip_string(p, e)))
					return NULL;
				p = ws(p, e);
				if (p >= e || *p != ':')
					return NULL;
				p++;
			}
			if (!(p = skip_value(p, e, depth + 1)))
				return NULL;
			p = ws(p, e);
			if (p >= e)
				return NULL;
			if (*p == close)
				return p + 1;
			if (*p != ',')
				return NULL;
			p++;
		}
	}
	/* a number or a literal */
	const char *s = p;

	while (p < e && !strchr(",}] \t\r\n", *p))
		p++;
	return p > s ? p : NULL;
}

/* decode the JSON string at p ('"') into out; -1 when it needs more than ASCII escapes */
static int decode_string(const char *p, const char *e, char *out, size_t outsz)
{
	size_t n = 0;

	for (p++; p < e && *p != '"'; p++) {
		char c = *p;

		if (c == '\\') {
			if (++p >= e)
				return -1;
			switch (*p) {
			case '"': c = '"'; break;
			case '\\': c = '\\'; break;
			case '/': c = '/'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u': {
				unsigned v = 0;

				if (e - p < 5)
					return -1;
				for (int i = 1; i <= 4; i++) {
					char h = p[i];

					v <<= 4;
					if (h >= '0' && h <= '9')
						v |= (unsigned)(h - '0');
					else if (h >= 'a' && h <= 'f')
						v |= (unsigned)(h - 'a' + 10);
					else if (h >= 'A' && h <= 'F')
						v |= (unsigned)(h - 'A' + 10);
					else
						return -1;
				}
				if (v == 0 || v >= 0x80)
					return -1;
				c = (char)v;
				p += 4;
				break;
			}
			default:
				return -1;
			}
		}
		if (n + 1 >= outsz)
			return -1;
		out[n++] = c;
	}
	if (p >= e)
		return -1;
	out[n] = 0;
	return 0;
}

/*
 * The top-level field `key` of the JSON object in js[0..n): 1 and its value
 * in out when it is a string, 0 when absent (or not a string), -1 when the
 * document is not a JSON object the scanner can read.
 */
static int top_string(const char *js, size_t n, const char *key, char *out, size_t outsz)
{
	const char *p = js, *e = js + n;
	int found = 0;

	p = ws(p, e);
	if (p >= e || *p != '{')
		return -1;
	p = ws(p + 1, e);
	if (p < e && *p == '}')
		return 0;
	for (;;) {
		const char *k, *ke;

		p = ws(p, e);
		if (p >= e || *p != '"')
			return -1;
		k = p + 1;
		if (!(p = skip_string(p, e)))
			return -1;
		ke = p - 1;
		p = ws(p, e);
		if (p >= e || *p != ':')
			return -1;
		p = ws(p + 1, e);
		if (!found && (size_t)(ke - k) == strlen(key) && memcmp(k, key, (size_t)(ke - k)) == 0 &&
		    p < e && *p == '"') {
			if (decode_string(p, e, out, outsz))
				return -1;
			found = 1;
		}
		if (!(p = skip_value(p, e, 1)))
			return -1;
		p = ws(p, e);
		if (p < e && *p == '}')
			return found;
		if (p >= e || *p != ',')
			return -1;
		p++;
	}
}

/* ---- I/O ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_all(int fd, struct buf *b, size_t max)
{
	char tmp[65536];

	for (;;) {
		ssize_t r = read(fd, tmp, sizeof(tmp));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return 0;
		if (b->n + (size_t)r > max)
			return -EFBIG;
		if (buf_put(b, tmp, (size_t)r))
			return -ENOMEM;
	}
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* poll fd for ev until the deadline: 1 ready, 0 timed out, -errno */
static int wait_fd(int fd, short ev, double deadline)
{
	for (;;) {
		double left = deadline - now_s();
		struct pollfd pfd = {.fd = fd, .events = ev};
		int r;

		if (left <= 0)
			return 0;
		r = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 1;
	}
}

static void ns_id(const char *path, char *out, size_t outsz)
{
	struct stat st;

	out[0] = 0;
	if (path && *path && stat(path, &st) == 0)
		snprintf(out, outsz, "%lu:%lu", (unsigned long)st.st_dev, (unsigned long)st.st_ino);
}

/* ---- fallback: the Python plugin next to this executable ---- */

static int fallback_path(char *out, size_t outsz)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return -1;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (!slash)
		return -1;
	*slash = 0;
	if ((size_t)snprintf(out, outsz, "%s/%s", self, FALLBACK_NAME) >= outsz)
		return -1;
	return 0;
}

/* stdin for the fallback: what we read, replayed from a memfd (or a pipe when small) */
static int replay_stdin(const struct buf *in)
{
	int fd = memfd_create("meshcni-cni-stdin", MFD_CLOEXEC);

	if (fd >= 0) {
		if (write_all(fd, in->p ? in->p : "", in->n) || lseek(fd, 0, SEEK_SET) != 0 || dup2(fd, 0) < 0) {
			close(fd);
			return -1;
		}
		close(fd);
		return 0;
	}
	int pp[2];

	if (in->n > 65536 || pipe(pp))
		return -1;
	if (write_all(pp[1], in->p ? in->p : "", in->n) || dup2(pp[0], 0) < 0) {
		close(pp[0]);
		close(pp[1]);
		return -1;
	}
	close(pp[0]);
	close(pp[1]);
	return 0;
}

/*
 * No fallback installed (a real node: the agent's Python lives in its image,
 * not on the host), so the shim answers by itself while the agent cannot:
 * ADD and CHECK "try again later" (the runtime retries the sandbox), DEL and
 * GC succeed having done nothing (best effort, idempotent: a pod must be
 * deletable while its node's agent restarts or after meshcni is uninstalled;
 * its veth goes with its netns, its address and record are released by the
 * agent's next GC), STATUS says the plugin cannot take ADDs.
 */
static int answer_alone(const char *version, const char *why)
{
	const char *cmd = getenv("CNI_COMMAND");

	if (cmd && (strcmp(cmd, "DEL") == 0 || strcmp(cmd, "GC") == 0)) {
		fprintf(stderr, "meshcni-cni: %s; %s done without the agent (nothing released here)\n", why, cmd);
		return 0;
	}
	if (cmd && strcmp(cmd, "STATUS") == 0)
		return cni_error(version, E_PLUGIN_UNAVAILABLE, "%s; the meshcni agent cannot take ADDs", why);
	return cni_error(version, E_TRY_AGAIN_LATER, "%s; try again once the meshcni agent runs", why);
}

/* exec the Python plugin; returns only on failure (after printing the CNI error) */
static int exec_fallback(char **argv, const struct buf *in, const char *version, const char *why)
{
	char path[PATH_MAX];

	if (fallback_path(path, sizeof(path)))
		return cni_error(version, E_TRY_AGAIN_LATER, "%s; the fallback plugin cannot be located", why);
	if (access(path, F_OK) != 0 && errno == ENOENT)
		return answer_alone(version, why);
	if (in && replay_stdin(in))
		return cni_error(version, E_IO_FAILURE, "%s; cannot hand stdin to %s: %s", why, path, strerror(errno));
	argv[0] = path;
	execv(path, argv);
	return cni_error(version, E_TRY_AGAIN_LATER, "%s; the fallback plugin %s cannot run: %s", why, path,
			 strerror(errno));
}

/* ---- the hand-over ---- */

enum { HO_DONE, HO_FALLBACK, HO_TIMEOUT, HO_ERROR };

struct answer {
	int exit_code;
	const char *body;
	size_t body_len;
};

static int connect_agent(const char *path, char *why, size_t whysz)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(why, whysz, "agentSocket %s: path too long", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, whysz, "socket: %s", strerror(errno));
		return -1;
	}
	/* a unix connect blocks (bounded by the send timeout) only while the backlog is full */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(why, whysz, "meshcni agent at %s is not reachable: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int build_request(struct buf *req, const struct buf *in)
{
	struct buf body = {0};
	char id[64];
	int first = 1, rc = -1;

	if (buf_puts(&body, "{\"env\": {"))
		goto out;
	for (size_t i = 0; i < sizeof(ENV_KEYS) / sizeof(ENV_KEYS[0]); i++) {
		const char *v = getenv(ENV_KEYS[i]);

		if (!v)
			continue;
		if ((!first && buf_puts(&body, ", ")) || buf_json_str(&body, ENV_KEYS[i], strlen(ENV_KEYS[i])) ||
		    buf_puts(&body, ": ") || buf_json_str(&body, v, strlen(v)))
			goto out;
		first = 0;
	}
	if (buf_puts(&body, "}, \"stdin\": ") || buf_json_str(&body, in->p ? in->p : "", in->n))
		goto out;
	ns_id("/proc/self/ns/net", id, sizeof(id));
	if (buf_puts(&body, ", \"hostNetns\": ") || buf_json_str(&body, id, strlen(id)))
		goto out;
	ns_id(getenv("CNI_NETNS"), id, sizeof(id));
	if (buf_puts(&body, ", \"netns\": ") || buf_json_str(&body, id, strlen(id)) || buf_puts(&body, "}"))
		goto out;
	snprintf(id, sizeof(id), "%zu", body.n);
	if (buf_puts(req, "POST /v1/cni HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
			  "Connection: close\r\nContent-Length: ") ||
	    buf_puts(req, id) || buf_puts(req, "\r\n\r\n") || buf_put(req, body.p, body.n))
		goto out;
	rc = 0;
out:
	free(body.p);
	return rc;
}

/* value of header `name` in the head [p, e), or NULL */
static const char *header(const char *p, const char *e, const char *name)
{
	size_t nl = strlen(name);

	while (p < e) {
		const char *eol = memmem(p, (size_t)(e - p), "\r\n", 2);

		if (!eol)
			eol = e;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			return v;
		}
		p = eol + 2;
	}
	return NULL;
}

static int hand_over(const char *sock, const struct buf *in, double timeout, struct buf *resp,
		     struct answer *ans, char *why, size_t whysz)
{
	double deadline = now_s() + timeout;
	struct buf req = {0};
	size_t off = 0;
	int fd, rc;

	fd = connect_agent(sock, why, whysz);
	if (fd < 0)
		return HO_FALLBACK;
	if (build_request(&req, in)) {
		snprintf(why, whysz, "out of memory");
		close(fd);
		return HO_ERROR;
	}
	while (off < req.n) {
		ssize_t w;

		rc = wait_fd(fd, POLLOUT, deadline);
		if (rc <= 0) {
			snprintf(why, whysz, "sending to the meshcni agent at %s: %s", sock,
				 rc == 0 ? "timed out" : strerror(-rc));
			goto fail;
		}
		w = send(fd, req.p + off, req.n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w < 0) {
			snprintf(why, whysz, "meshcni agent at %s: connection lost: %s", sock, strerror(errno));
			rc = HO_FALLBACK;
			goto out;
		}
		off += (size_t)w;
	}
	for (;;) {
		char tmp[65536];
		const char *he;
		ssize_t r;

		rc = wait_fd(fd, POLLIN, deadline);
		if (rc <= 0) {
			snprintf(why, whysz, "reading from the meshcni agent at %s: %s", sock,
				 rc == 0 ? "timed out" : strerror(-rc));
			goto fail;
		}
		r = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0 || (r == 0 && resp->n == 0)) {
			/* the agent went away before answering (restart): the plugin runs here */
			snprintf(why, whysz, "meshcni agent at %s closed the connection: %s", sock,
				 r < 0 ? strerror(errno) : "no answer");
			rc = HO_FALLBACK;
			goto out;
		}
		if (r > 0 && (resp->n + (size_t)r > MAX_RESPONSE || buf_put(resp, tmp, (size_t)r))) {
			snprintf(why, whysz, "meshcni agent at %s: answer too large", sock);
			rc = HO_ERROR;
			goto out;
		}
		he = resp->n ? memmem(resp->p, resp->n, "\r\n\r\n", 4) : NULL;
		if (he) {
			const char *cl = header(resp->p, he, "Content-Length");
			size_t want;
			int status = 0;

			if (sscanf(resp->p, "HTTP/1.%*d %d", &status) != 1 || !cl) {
				snprintf(why, whysz, "meshcni agent at %s: malformed answer", sock);
				rc = HO_FALLBACK;
				goto out;
			}
			want = (size_t)strtoul(cl, NULL, 10);
			if (resp->n - (size_t)(he + 4 - resp->p) >= want) {
				const char *ec = header(resp->p, he, "Meshcni-Exit-Code");

				if (status != 200 || !ec) {
					snprintf(why, whysz, "meshcni agent at %s answered HTTP %d", sock, status);
					rc = HO_FALLBACK;
					goto out;
				}
				ans->exit_code = atoi(ec);
				ans->body = he + 4;
				ans->body_len = want;
				rc = HO_DONE;
				goto out;
			}
		}
		if (r == 0) {
			snprintf(why, whysz, "meshcni agent at %s: answer cut short", sock);
			rc = HO_FALLBACK;
			goto out;
		}
	}
fail:
	rc = rc == 0 ? HO_TIMEOUT : HO_ERROR;
out:
	free(req.p);
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = getenv("CNI_COMMAND");
	const char *tenv = getenv("MESHCNI_CNI_SHIM_TIMEOUT");
	char version[16], sock[sizeof(((struct sockaddr_un *)0)->sun_path)], why[1200];
	const char *v;
	struct buf in = {0}, resp = {0};
	struct answer ans = {0};
	double timeout = DEFAULT_TIMEOUT_S;
	int rc;

	(void)argc;
	if (argc > 1 || getenv("MESHCNI_CNI_CRASH_AT") || getenv("MESHCNI_CNI_NETLINK"))
		return exec_fallback(argv, NULL, CURRENT, "meshcni-cni shim");
	if (!(cmd && strcmp(cmd, "VERSION") == 0 && isatty(0))) {
		rc = read_all(0, &in, MAX_STDIN);
		if (rc)
			return cni_error(CURRENT, E_IO_FAILURE, "reading the network config from stdin: %s",
					 strerror(-rc));
	}
	/* errors are answered in the version asked for, as the Python plugin does */
	v = CURRENT;
	if (in.n && top_string(in.p, in.n, "cniVersion", version, sizeof(version)) == 1 && supported_version(version))
		v = supported_version(version);
	if (cmd && strcmp(cmd, "VERSION") == 0) {
		printf("{\"cniVersion\": \"%s\", \"supportedVersions\": [\"%s\", \"%s\", \"%s\"]}\n", v, SUPPORTED[0],
		       SUPPORTED[1], SUPPORTED[2]);
		return fflush(stdout) ? 1 : 0;
	}
	if (in.n == 0 || top_string(in.p, in.n, "agentSocket", sock, sizeof(sock)) != 1 || sock[0] != '/')
		return exec_fallback(argv, &in, v, "no agentSocket in the network config");
	if (tenv && *tenv) {
		char *end;
		double t = strtod(tenv, &end);

		if (end != tenv && t > 0)
			timeout = t;
	}
	rc = hand_over(sock, &in, timeout, &resp, &ans, why, sizeof(why));
	switch (rc) {
	case HO_DONE:
		if (write_all(1, ans.body, ans.body_len))
			return 1;
		return ans.exit_code;
	case HO_FALLBACK:
		fprintf(stderr, "meshcni-cni: %s; running the plugin here\n", why);
		return exec_fallback(argv, &in, v, why);
	case HO_TIMEOUT:
		return cni_error(v, E_TRY_AGAIN_LATER, "%s (%s %s, limit %g s)", why, cmd ? cmd : "?",
				 getenv("CNI_CONTAINERID") ? getenv("CNI_CONTAINERID") : "", timeout);
	default:
		return cni_error(v, E_IO_FAILURE, "%s", why);
	}
}
