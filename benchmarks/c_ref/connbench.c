// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * connbench: TCP connect rate, client and backend.
 *
 *   connbench IP PORT N            N times: socket, SO_REUSEADDR, SO_LINGER {1, 0},
 *                                  connect, close (RST: no TIME_WAIT, so ports are
 *                                  never exhausted). Timed in-process with
 *                                  CLOCK_MONOTONIC; prints one JSON line
 *                                  {"connects":N,"seconds":s,"errors":e,"first_errno":x}.
 *                                  Stops at the first failed connect (connect has a
 *                                  2 s SO_SNDTIMEO, so an unrewritten connect cannot hang).
 *   connbench --serve IP PORT      backend: listen (backlog 65535) and accept + close in
 *                                  a loop; prints "ready" once listening, and on SIGTERM
 *                                  prints {"accepted":n} and exits.
 *
 * IPv4 only. Build: gcc -Wall -O2 -o connbench connbench.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int parse(const char *ip, const char *port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)atoi(port));
	if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1) {
		fprintf(stderr, "connbench: bad IPv4 address %s\n", ip);
		return -1;
	}
	return 0;
}

static int serve(struct sockaddr_in *sa)
{
	int one = 1;
	unsigned long long accepted = 0;
	struct sigaction act = {0};

	act.sa_handler = on_term; /* no SA_RESTART: accept returns EINTR */
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(ls, (struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(ls, 65535) < 0) {
		perror("connbench --serve");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		int c = accept(ls, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("connbench --serve: accept");
			return 1;
		}
		close(c);
		accepted++;
	}
	printf("{\"accepted\":%llu}\n", accepted);
	return 0;
}

static int client(struct sockaddr_in *sa, long n)
{
	int one = 1;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct timeval to = {.tv_sec = 2, .tv_usec = 0};
	struct timespec t0, t1;
	long done = 0, errors = 0;
	int first_errno = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0) {
			first_errno = errno;
			errors++;
			break;
		}
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &to, sizeof(to));
		if (connect(s, (struct sockaddr *)sa, sizeof(*sa)) < 0) {
			first_errno = errno;
			errors++;
			close(s);
			break;
		}
		close(s);
		done++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	printf("{\"connects\":%ld,\"seconds\":%.9f,\"errors\":%ld,\"first_errno\":%d}\n",
	       done, secs, errors, first_errno);
	return errors ? 2 : 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;

	if (argc == 4 && strcmp(argv[1], "--serve") == 0) {
		if (parse(argv[2], argv[3], &sa))
			return 1;
		return serve(&sa);
	}
	if (argc == 4) {
		long n = atol(argv[3]);
		if (parse(argv[1], argv[2], &sa) || n <= 0)
			return 1;
		return client(&sa, n);
	}
	fprintf(stderr, "usage: connbench IP PORT N | connbench --serve IP PORT\n");
	return 1;
}
