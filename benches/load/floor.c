/*
 * The floor: the least work any proxy can do here. Each client connection
 * is paired with an upstream connection of its own, and whatever one side
 * sends is written to the other as it comes: one read and one write per
 * message, no parsing, no headers, no pool, no timers. It is not an HTTP
 * proxy (it cannot route, retry or share upstream connections); run.sh
 * measures it beside ours and nginx, on the same CPU and under the same
 * load, to show how much of a proxy's CPU per request is the kernel's
 * socket work that every proxy pays.
 *
 * Usage: floor LISTEN-PORT UPSTREAM-PORT (both on 127.0.0.1). One thread,
 * level-triggered epoll. Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
static int peer[MAX_FD];
static char buf[65536];

static struct sockaddr_in addr(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Writes all of buf[0..n) to fd, waiting for room if the socket is full
 * (it never is with this benchmark's small messages). */
static int write_all(int fd, const char *p, ssize_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) continue;
        if (w <= 0) return -1;
        p += w;
        n -= w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN-PORT UPSTREAM-PORT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in la = addr(atoi(argv[1])), ua = addr(atoi(argv[2]));
    int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 4096)) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0 || c >= MAX_FD) {
                    if (c >= 0) close(c);
                    continue;
                }
                /* Loopback connects at once: a blocking connect, then
                 * non-blocking like the client side. */
                int u = socket(AF_INET, SOCK_STREAM, 0);
                if (u < 0 || u >= MAX_FD || connect(u, (struct sockaddr *)&ua, sizeof ua)) {
                    close(c);
                    if (u >= 0) close(u);
                    continue;
                }
                int nb = 1;
                ioctl(u, FIONBIO, &nb);
                nodelay(c);
                nodelay(u);
                peer[c] = u;
                peer[u] = c;
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                ev.data.fd = u;
                epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0 || write_all(peer[fd], buf, r)) {
                int p = peer[fd];
                close(fd);
                close(p);
            }
        }
    }
}
