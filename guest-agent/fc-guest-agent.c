/* fc-guest-agent: command line, listeners, the accept loop and request dispatch.
 *
 *   fc-guest-agent --version
 *   fc-guest-agent [--listen vsock:PORT | unix:PATH | tcp:HOST:PORT]
 *   fc-guest-agent --supervise [--listen ADDR]
 *   (as PID 1: the init shim, see init.c)
 *
 * Every accepted connection is served by its own forked process: one request, one
 * operation, then the process exits. A crash or hang in one operation cannot take the
 * listener or other connections with it.
 */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "agent.h"

#define REQUEST_TIMEOUT_MS 30000

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fc-guest-agent [--listen ADDR] [--supervise] | --version\n"
            "  --listen ADDR  vsock:PORT (default vsock:%d), unix:PATH or tcp:HOST:PORT\n"
            "  --supervise    run the server in the background and restart it whenever it exits\n"
            "  --version      print the version and the protocol version\n"
            "As PID 1 (init=/sbin/fc-guest-agent) it starts the supervisor and execs the real\n"
            "init: fc_macos.init=PATH on the kernel command line, else /sbin/init.\n",
            FCGA_DEFAULT_PORT);
}

/* ---- listeners ------------------------------------------------------------------------- */

static int listen_vsock(const char *port_s)
{
    char *end;
    long port = strtol(port_s, &end, 10);
    if (*port_s == 0 || *end || port <= 0 || port > 0xFFFFFFFFL) {
        log_msg("bad vsock port '%s'", port_s);
        return -1;
    }
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_msg("socket(AF_VSOCK): %s (is the vsock driver loaded? modprobe vmw_vsock_virtio_transport)",
                strerror(errno));
        return -1;
    }
    struct sockaddr_vm addr;
    memset(&addr, 0, sizeof addr);
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = (unsigned)port;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        log_msg("bind vsock:%ld: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        log_msg("unix socket path too long: %s", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* a stale socket from an earlier run */
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        log_msg("bind unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_tcp(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) {
        log_msg("bad tcp address '%s' (want tcp:HOST:PORT)", hostport);
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:80 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc) {
        log_msg("tcp address '%s': %s", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        log_msg("bind tcp:%s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int open_listener(const char *addr)
{
    int fd;
    if (!strncmp(addr, "vsock:", 6))
        fd = listen_vsock(addr + 6);
    else if (!strncmp(addr, "unix:", 5))
        fd = listen_unix(addr + 5);
    else if (!strncmp(addr, "tcp:", 4))
        fd = listen_tcp(addr + 4);
    else {
        log_msg("unknown listen address '%s' (want vsock:PORT, unix:PATH or tcp:HOST:PORT)", addr);
        return -1;
    }
    if (fd >= 0 && listen(fd, 128) < 0) {
        log_msg("listen %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- one connection -------------------------------------------------------------------- */

static void dispatch(int fd, const jval *req)
{
    static const struct {
        const char *name;
        void (*fn)(int, const jval *);
    } ops[] = {
        {"info", op_info}, {"exec", op_exec}, {"stat", op_stat},
        {"get", op_get},   {"put", op_put},   {"connect", op_connect},
    };
    int bad = 0;
    double v = json_num(req, "v", -1, &bad);
    const char *op = json_cstr(req, "op", NULL, &bad);
    if (bad || !op || v < 0) {
        send_error(fd, F_RES, "bad_request", "a request needs \"v\" (a number) and \"op\" (a string)");
        return;
    }
    if (v != FCGA_PROTOCOL) {
        send_error(fd, F_RES, "unsupported_version",
                   "protocol version %g is not supported: this guest agent (%s) speaks version %d",
                   v, FCGA_VERSION, FCGA_PROTOCOL);
        return;
    }
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(op, ops[i].name)) {
            ops[i].fn(fd, req);
            return;
        }
    send_error(fd, F_RES, "unknown_op",
               "unknown operation '%.100s' (this guest agent knows info, exec, stat, get, put, connect)", op);
}

/* Reads and checks the REQ; on a mistake answers RES bad_request and returns NULL. */
static jval *read_request(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    do
        r = poll(&p, 1, REQUEST_TIMEOUT_MS);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return NULL; /* no request within the timeout */
    frame f;
    r = frame_read(fd, &f);
    if (r == 1 || (r < 0 && errno != EMSGSIZE))
        return NULL;
    if (r < 0) {
        send_error(fd, F_RES, "bad_request", "frame longer than %u bytes", FCGA_MAX_FRAME);
        return NULL;
    }
    if (f.type != F_REQ) {
        send_error(fd, F_RES, "bad_request", "the first frame must be REQ (type 0x01), got type 0x%02x", f.type);
        frame_free(&f);
        return NULL;
    }
    const char *err = NULL;
    jval *req = json_parse(f.payload, f.len, &err);
    frame_free(&f);
    if (!req || req->type != J_OBJ) {
        send_error(fd, F_RES, "bad_request", "REQ payload is not a JSON object: %s", req ? "not an object" : err);
        json_free(req);
        return NULL;
    }
    return req;
}

static void handle_connection(int fd)
{
    /* The listener ignores SIGCHLD (auto-reaping); operations that fork need it back. */
    signal(SIGCHLD, SIG_DFL);
    jval *req = read_request(fd);
    if (!req) {
        linger_close(fd);
        return;
    }
    dispatch(fd, req);
    json_free(req);
    close(fd);
}

int serve(const char *addr)
{
    int lfd = open_listener(addr);
    if (lfd < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_IGN); /* connection processes are reaped by the kernel */
    log_muted = 0; /* listening: whatever happens now is news */
    log_note("serving on %s (version %s, protocol %d)", addr, FCGA_VERSION, FCGA_PROTOCOL);
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                usleep(100000);
                continue;
            }
            log_msg("accept: %s", strerror(errno));
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            handle_connection(cfd);
            _exit(0);
        }
        if (pid < 0) {
            log_msg("fork: %s", strerror(errno));
            usleep(100000);
        }
        close(cfd);
    }
}

int main(int argc, char **argv)
{
    /* fds 0-2 must be taken, or a pipe could land on them and be clobbered by dup2. */
    int nul;
    while ((nul = open("/dev/null", O_RDWR)) >= 0 && nul < 3)
        ;
    if (nul >= 3)
        close(nul);
    if (getpid() == 1 && !(argc > 1 && !strncmp(argv[1], "--", 2)))
        pid1_shim(argc, argv); /* never returns */
    const char *addr = NULL;
    char dflt[32];
    int do_supervise = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--version")) {
            printf("fc-guest-agent %s (protocol %d)\n", FCGA_VERSION, FCGA_PROTOCOL);
            return 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--supervise")) {
            do_supervise = 1;
        } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            addr = argv[++i];
        } else if (!strncmp(argv[i], "--listen=", 9)) {
            addr = argv[i] + 9;
        } else {
            fprintf(stderr, "fc-guest-agent: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!addr) {
        snprintf(dflt, sizeof dflt, "vsock:%d", FCGA_DEFAULT_PORT);
        addr = dflt;
    }
    if (do_supervise)
        return supervise(addr, 1);
    return serve(addr);
}
