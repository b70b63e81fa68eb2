/* The info and connect operations. */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define CONNECT_TIMEOUT_MS 10000
#define RELAY_BUF (256 * 1024)

static int prefix_len(const struct sockaddr *mask)
{
    const unsigned char *p;
    size_t n;
    if (!mask)
        return 0;
    if (mask->sa_family == AF_INET) {
        p = (const unsigned char *)&((const struct sockaddr_in *)mask)->sin_addr;
        n = 4;
    } else if (mask->sa_family == AF_INET6) {
        p = (const unsigned char *)&((const struct sockaddr_in6 *)mask)->sin6_addr;
        n = 16;
    } else
        return 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++)
        for (int b = 7; b >= 0; b--)
            bits += (p[i] >> b) & 1;
    return bits;
}

static void write_addresses(jbuf *b)
{
    struct ifaddrs *ifs, *i;
    jb_arr(b);
    if (getifaddrs(&ifs) == 0) {
        for (i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
                continue;
            char text[INET6_ADDRSTRLEN];
            const void *raw = i->ifa_addr->sa_family == AF_INET
                                  ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                  : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
            if (!inet_ntop(i->ifa_addr->sa_family, raw, text, sizeof text))
                continue;
            jb_elem(b);
            jb_obj(b);
            jb_key(b, "ifname"); jb_cstr(b, i->ifa_name);
            jb_key(b, "family"); jb_cstr(b, i->ifa_addr->sa_family == AF_INET ? "inet" : "inet6");
            jb_key(b, "address"); jb_cstr(b, text);
            jb_key(b, "prefixlen"); jb_int(b, prefix_len(i->ifa_netmask));
            jb_obj_end(b);
        }
        freeifaddrs(ifs);
    }
    jb_arr_end(b);
}

void op_info(int fd, const jval *req)
{
    (void)req;
    struct utsname u;
    memset(&u, 0, sizeof u);
    uname(&u);
    struct timespec up;
    clock_gettime(CLOCK_BOOTTIME, &up);
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "ok"); jb_bool(&b, 1);
    jb_key(&b, "v"); jb_int(&b, FCGA_PROTOCOL);
    jb_key(&b, "version"); jb_cstr(&b, FCGA_VERSION);
    jb_key(&b, "arch"); jb_cstr(&b, u.machine);
    jb_key(&b, "kernel"); jb_cstr(&b, u.release);
    jb_key(&b, "hostname"); jb_cstr(&b, u.nodename);
    jb_key(&b, "uptime_s"); jb_double(&b, (double)up.tv_sec + (double)up.tv_nsec / 1e9);
    jb_key(&b, "pid"); jb_int(&b, (long long)getppid()); /* the listening server */
    jb_key(&b, "ops");
    jb_arr(&b);
    static const char *const ops[] = {"info", "exec", "stat", "get", "put", "connect"};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        jb_elem(&b);
        jb_cstr(&b, ops[k]);
    }
    jb_arr_end(&b);
    jb_key(&b, "checksums");
    checksum_list(&b);
    jb_key(&b, "addresses");
    write_addresses(&b);
    jb_obj_end(&b);
    frame_send_buf(fd, F_RES, &b);
    jb_free(&b);
}

/* Connects to host:port with a timeout; returns the socket or -1 with errno set. */
static int tcp_connect(const char *host, const char *port, int *gai_error)
{
    struct addrinfo hints, *res, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    *gai_error = getaddrinfo(host, port, &hints, &res);
    if (*gai_error)
        return -1;
    int fd = -1, err = ECONNREFUSED;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int r;
            do
                r = poll(&p, 1, CONNECT_TIMEOUT_MS);
            while (r < 0 && errno == EINTR);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (r == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
                break;
            err = r == 0 ? ETIMEDOUT : soerr ? soerr : errno;
        } else
            err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        errno = err;
    return fd;
}

/* One direction of the relay: bytes read from `from`, waiting to be written to `to`. */
typedef struct {
    int from, to;
    char *buf;
    size_t start, len;
    int eof;
} pipe_dir;

static void relay(int a, int b)
{
    pipe_dir d[2] = {{a, b, malloc(RELAY_BUF), 0, 0, 0}, {b, a, malloc(RELAY_BUF), 0, 0, 0}};
    if (!d[0].buf || !d[1].buf)
        abort();
    set_nonblock(a, 1);
    set_nonblock(b, 1);
    for (;;) {
        /* EOF on either side ends both, once what was read has been passed on. */
        if ((d[0].eof || d[1].eof) && d[0].len == 0 && d[1].len == 0)
            break;
        struct pollfd p[2] = {{a, 0, 0}, {b, 0, 0}};
        for (int i = 0; i < 2; i++) {
            struct pollfd *pf = d[i].from == a ? &p[0] : &p[1];
            struct pollfd *pt = d[i].to == a ? &p[0] : &p[1];
            if (!d[0].eof && !d[1].eof && d[i].len == 0)
                pf->events |= POLLIN;
            if (d[i].len)
                pt->events |= POLLOUT;
        }
        for (int i = 0; i < 2; i++)
            if (!p[i].events)
                p[i].fd = -1; /* no interest: do not wake up for its POLLHUP */
        int r = poll(p, 2, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int failed = 0;
        for (int i = 0; i < 2 && !failed; i++) {
            pipe_dir *x = &d[i];
            struct pollfd *pf = x->from == a ? &p[0] : &p[1];
            struct pollfd *pt = x->to == a ? &p[0] : &p[1];
            if (x->len && (pt->revents & (POLLOUT | POLLERR | POLLHUP))) {
                ssize_t w = write(x->to, x->buf + x->start, x->len);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    failed = 1;
                else if (w > 0) {
                    x->start += (size_t)w;
                    x->len -= (size_t)w;
                    if (!x->len)
                        x->start = 0;
                }
            }
            if (!x->len && (pf->events & POLLIN) && (pf->revents & (POLLIN | POLLERR | POLLHUP))) {
                ssize_t n = read(x->from, x->buf, RELAY_BUF);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                    x->eof = 1;
                else if (n > 0)
                    x->len = (size_t)n;
            }
        }
        if (failed)
            break;
    }
    free(d[0].buf);
    free(d[1].buf);
}

void op_connect(int fd, const jval *req)
{
    int bad = 0;
    double port = json_num(req, "port", -1, &bad);
    const char *host = json_cstr(req, "host", "127.0.0.1", &bad);
    if (bad || port < 1 || port > 65535 || port != (double)(int)port || !host || !*host) {
        send_error(fd, F_RES, "bad_request", "connect needs \"port\" (1-65535) and optionally \"host\" (a string)");
        return;
    }
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", (int)port);
    int gai = 0;
    int tfd = tcp_connect(host, port_s, &gai);
    if (tfd < 0) {
        if (gai)
            send_error(fd, F_RES, "connection_refused", "cannot resolve '%.200s' in the guest: %s", host,
                       gai_strerror(gai));
        else if (errno == ECONNREFUSED)
            send_error(fd, F_RES, "connection_refused", "nothing listens on %.200s:%d in the guest", host, (int)port);
        else
            send_error(fd, F_RES, "connection_refused", "cannot connect to %.200s:%d in the guest: %s", host,
                       (int)port, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    jbuf b;
    jb_init(&b);
    jb_raw(&b, "{\"ok\":true}", 11);
    int r = frame_send_buf(fd, F_RES, &b);
    jb_free(&b);
    if (r == 0)
        relay(fd, tfd);
    close(tfd);
}
