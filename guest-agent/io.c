/* EINTR-safe I/O, frames, logging and process helpers. */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int read_full(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            if (got == 0)
                return 1;
            errno = EPIPE;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

int frame_read_into(int fd, frame *f, char **buf, size_t *cap)
{
    unsigned char hdr[5];
    f->payload = NULL;
    int r = read_full(fd, hdr, 5);
    if (r)
        return r;
    f->type = hdr[0];
    f->len = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
    if (f->len > FCGA_MAX_FRAME) {
        errno = EMSGSIZE;
        return -1;
    }
    if (*cap < (size_t)f->len + 1) {
        char *grown = realloc(*buf, (size_t)f->len + 1);
        if (!grown)
            abort();
        *buf = grown;
        *cap = (size_t)f->len + 1;
    }
    if (f->len && read_full(fd, *buf, f->len)) {
        if (errno == 0)
            errno = EPIPE;
        return -1;
    }
    f->payload = *buf;
    f->payload[f->len] = 0;
    return 0;
}

int frame_read(int fd, frame *f)
{
    char *buf = NULL;
    size_t cap = 0;
    int r = frame_read_into(fd, f, &buf, &cap);
    if (r)
        free(buf);
    return r;
}

void frame_free(frame *f)
{
    free(f->payload);
    f->payload = NULL;
}

int frame_send(int fd, int type, const void *payload, size_t len)
{
    unsigned char hdr[5] = {(unsigned char)type, (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    if (len > FCGA_MAX_FRAME) {
        errno = EMSGSIZE;
        return -1;
    }
    /* Header and payload in one system call where the socket takes it all. */
    struct iovec iov[2] = {{hdr, 5}, {(void *)payload, len}};
    int n = len ? 2 : 1;
    struct iovec *v = iov;
    while (n) {
        ssize_t w = writev(fd, v, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (n && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int frame_send_buf(int fd, int type, const jbuf *b)
{
    return frame_send(fd, type, b->data, b->len);
}

int send_error(int fd, int type, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "ok"); jb_bool(&b, 0);
    jb_key(&b, "error"); jb_cstr(&b, code);
    jb_key(&b, "message"); jb_cstr(&b, msg);
    jb_obj_end(&b);
    int r = frame_send_buf(fd, type, &b);
    jb_free(&b);
    return r;
}

const char *errno_code(int err)
{
    switch (err) {
    case ENOENT: return "not_found";
    case ENOTDIR: return "not_a_directory";
    case EACCES:
    case EPERM:
    case EROFS: return "permission_denied";
    case EEXIST:
    case ENOTEMPTY:
    case EISDIR: return "exists";
    default: return "io_error";
    }
}

void linger_close(int fd)
{
    shutdown(fd, SHUT_WR);
    char buf[65536];
    double until = mono_now() + 2;
    struct pollfd pf = {fd, POLLIN, 0};
    int r;
    while (mono_now() < until && ((r = poll(&pf, 1, 200)) > 0 || (r < 0 && errno == EINTR)))
        if ((pf.revents & (POLLIN | POLLHUP | POLLERR)) && read(fd, buf, sizeof buf) <= 0)
            break;
    close(fd);
}

void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int log_fd = 2;
static int log_is_kmsg;
int log_muted;

void log_to_kmsg_if_possible(void)
{
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) {
        log_fd = fd;
        log_is_kmsg = 1;
    }
}

static void log_line(int level, const char *fmt, va_list ap)
{
    char line[600];
    int n = 0;
    if (log_is_kmsg)
        n = snprintf(line, sizeof line, "<%d>", level);
    n += snprintf(line + n, sizeof line - (size_t)n, "fc-guest-agent[%d]: ", (int)getpid());
    vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    (void)write_all(log_fd, line, len); /* one write: one /dev/kmsg record */
}

void log_msg(const char *fmt, ...)
{
    if (log_muted)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(4, fmt, ap); /* KERN_WARNING: shown on the console */
    va_end(ap);
}

void log_note(const char *fmt, ...)
{
    if (log_muted)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(7, fmt, ap); /* KERN_DEBUG: in the kernel log, not on the serial console */
    va_end(ap);
}

void reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < _NSIG; s++)
        sigaction(s, &sa, NULL); /* fails harmlessly for SIGKILL/SIGSTOP and reserved ones */
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

/* The session id of a process, from field 6 of /proc/PID/stat (0 when unknown). */
static pid_t session_of(const char *pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    int sid = 0;
    if (!p || sscanf(p + 1, " %*c %*d %*d %d", &sid) != 1)
        return 0;
    return sid;
}

void kill_session(pid_t sid)
{
    if (sid <= 1)
        return;
    kill(-sid, SIGKILL);
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        if (session_of(e->d_name) == sid)
            kill((pid_t)atoi(e->d_name), SIGKILL);
    }
    closedir(d);
}
