/* The exec operation: runs a command with pipes or a pty and relays its streams.
 *
 * After RES ok the connection carries STDOUT/STDERR frames to the client and STDIN/CTRL
 * frames from it, all multiplexed by one poll loop with bounded queues in both directions
 * (a slow client slows the command down instead of growing memory). The loop ends when
 * the command has exited and its output is drained (EOF, or 200 ms without data); then
 * the EOF frames and EXIT are sent. A client that disconnects first gets the command's
 * whole session killed.
 */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define QUEUE_LIMIT (1u << 20) /* stop reading a source while this much waits to be written */
#define READ_CHUNK (128 * 1024)
#define DRAIN_IDLE_S 0.2
#define MAX_ARGS 4096

/* ---- a byte queue ---------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t start, len, cap;
} queue;

static void q_push(queue *q, const void *p, size_t n)
{
    if (q->start && q->start + q->len + n > q->cap) {
        memmove(q->data, q->data + q->start, q->len);
        q->start = 0;
    }
    if (q->len + n > q->cap) {
        size_t cap = q->cap ? q->cap : 65536;
        while (cap < q->len + n)
            cap *= 2;
        q->data = realloc(q->data, cap);
        if (!q->data)
            abort();
        q->cap = cap;
    }
    memcpy(q->data + q->start + q->len, p, n);
    q->len += n;
}

static void q_pop(queue *q, size_t n)
{
    q->start += n;
    q->len -= n;
    if (!q->len)
        q->start = 0;
}

static void q_frame(queue *q, int type, const void *p, size_t n)
{
    unsigned char hdr[5] = {(unsigned char)type, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                            (unsigned char)(n >> 8), (unsigned char)n};
    q_push(q, hdr, 5);
    if (n)
        q_push(q, p, n);
}

/* Writes what the queue holds to a non-blocking fd: 0 ok (maybe partial), -1 error. */
static int q_flush(queue *q, int fd)
{
    while (q->len) {
        ssize_t w = write(fd, q->data + q->start, q->len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        q_pop(q, (size_t)w);
    }
    return 0;
}

/* ---- request ---------------------------------------------------------------------------- */

typedef struct {
    char **argv;
    char **envp;
    const char *cwd;
    int tty, want_stdin;
    unsigned short rows, cols;
    double timeout_s;
    char path[4096]; /* argv[0] resolved */
} exec_req;

static int env_add(char **envp, int n, const char *kv)
{
    size_t klen = strcspn(kv, "=") + 1;
    for (int i = 0; i < n; i++)
        if (!strncmp(envp[i], kv, klen)) {
            envp[i] = (char *)kv;
            return n;
        }
    envp[n] = (char *)kv;
    return n + 1;
}

static const char *env_get(char **envp, const char *key)
{
    size_t k = strlen(key);
    for (; *envp; envp++)
        if (!strncmp(*envp, key, k) && (*envp)[k] == '=')
            return *envp + k + 1;
    return NULL;
}

/* Fills `r` from the request; on a mistake sends RES bad_request and returns -1. */
static int parse_request(int fd, const jval *req, exec_req *r)
{
    int bad = 0;
    const jval *argv = json_get(req, "argv");
    size_t argc = 0, envc = 0;
    const jval *a;
    if (!argv || argv->type != J_ARR || !argv->child) {
        send_error(fd, F_RES, "bad_request", "exec needs \"argv\": a non-empty array of strings");
        return -1;
    }
    for (a = argv->child; a; a = a->next)
        if (a->type != J_STR || strlen(a->str) != a->len || ++argc > MAX_ARGS) {
            send_error(fd, F_RES, "bad_request", "\"argv\" must be strings without NUL bytes (at most %d)", MAX_ARGS);
            return -1;
        }
    const jval *env = json_get(req, "env");
    if (env && env->type != J_NULL) {
        if (env->type != J_ARR) {
            send_error(fd, F_RES, "bad_request", "\"env\" must be an array of \"KEY=VALUE\" strings");
            return -1;
        }
        for (a = env->child; a; a = a->next, envc++)
            if (a->type != J_STR || strlen(a->str) != a->len || !strchr(a->str, '=') || a->str[0] == '=' ||
                envc >= MAX_ARGS) {
                send_error(fd, F_RES, "bad_request", "\"env\" entries must be \"KEY=VALUE\" strings");
                return -1;
            }
    }
    r->argv = calloc(argc + 1, sizeof *r->argv);
    r->envp = calloc(envc + 4, sizeof *r->envp);
    if (!r->argv || !r->envp)
        abort();
    size_t i = 0;
    for (a = argv->child; a; a = a->next)
        r->argv[i++] = a->str;
    r->cwd = json_cstr(req, "cwd", "/", &bad);
    r->tty = json_bool(req, "tty", 0, &bad);
    r->want_stdin = json_bool(req, "stdin", 1, &bad);
    double rows = json_num(req, "rows", 24, &bad), cols = json_num(req, "cols", 80, &bad);
    r->timeout_s = json_num(req, "timeout_s", 0, &bad);
    if (bad || !r->cwd || !*r->cwd || rows < 1 || rows > 65535 || cols < 1 || cols > 65535 || r->timeout_s < 0) {
        send_error(fd, F_RES, "bad_request",
                   "bad exec field: cwd is a string, tty and stdin booleans, rows and cols 1-65535, timeout_s >= 0");
        return -1;
    }
    r->rows = (unsigned short)rows;
    r->cols = (unsigned short)cols;
    int n = 0;
    n = env_add(r->envp, n, "PATH=" DEFAULT_PATH);
    n = env_add(r->envp, n, "HOME=/root");
    if (r->tty)
        n = env_add(r->envp, n, "TERM=xterm");
    if (env && env->type == J_ARR)
        for (a = env->child; a; a = a->next)
            n = env_add(r->envp, n, a->str);
    r->envp[n] = NULL;
    return 0;
}

/* Resolves argv[0] like execvp (through the command's PATH); on failure sends RES. */
static int resolve_command(int fd, exec_req *r)
{
    const char *cmd = r->argv[0];
    struct stat st;
    if (!*cmd) {
        send_error(fd, F_RES, "command_not_found", "empty command name");
        return -1;
    }
    if (strchr(cmd, '/')) {
        if (cmd[0] == '/')
            snprintf(r->path, sizeof r->path, "%s", cmd);
        else
            snprintf(r->path, sizeof r->path, "%s/%s", r->cwd, cmd);
        if (stat(r->path, &st) < 0) {
            send_error(fd, F_RES, "command_not_found", "%.300s: no such file in the guest", cmd);
            return -1;
        }
        if (!S_ISREG(st.st_mode) || access(r->path, X_OK) < 0) {
            send_error(fd, F_RES, "not_executable", "%.300s: %s", cmd,
                       S_ISDIR(st.st_mode) ? "is a directory" : "is not an executable file");
            return -1;
        }
        return 0;
    }
    const char *path = env_get(r->envp, "PATH");
    int seen_noexec = 0;
    for (const char *p = path; p && *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n + strlen(cmd) + 2 <= sizeof r->path) {
            snprintf(r->path, sizeof r->path, "%.*s/%s", (int)n, p, cmd);
            if (stat(r->path, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(r->path, X_OK) == 0)
                    return 0;
                seen_noexec = 1;
            }
        }
        p += n;
        if (*p == ':')
            p++;
    }
    if (seen_noexec)
        send_error(fd, F_RES, "not_executable", "%.300s: found in PATH but not executable", cmd);
    else
        send_error(fd, F_RES, "command_not_found", "%.300s: command not found in the guest (PATH=%.300s)", cmd,
                   path ? path : "");
    return -1;
}

/* ---- pty -------------------------------------------------------------------------------- */

/* Mounts devtmpfs on /dev and devpts on /dev/pts where they are missing (a minimal guest). */
static void mount_dev(void)
{
    struct stat st;
    if (stat("/dev/null", &st) < 0 || stat("/dev/ptmx", &st) < 0)
        mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mkdir("/dev/pts", 0755);
    if (mount("devpts", "/dev/pts", "devpts", 0, "gid=5,mode=620,ptmxmode=666") < 0 && errno == EINVAL)
        mount("devpts", "/dev/pts", "devpts", 0, NULL);
}

static int open_master(void)
{
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    return m;
}

static int open_pty(char *slave, size_t n)
{
    int m = open_master();
    if (m < 0) {
        mount_dev();
        m = open_master();
    }
    if (m < 0)
        return -1;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, slave, n) != 0) {
        close(m);
        return -1;
    }
    return m;
}

/* ---- the child ---------------------------------------------------------------------------- */

static int sigchld_pipe[2] = {-1, -1};

static void on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t w = write(sigchld_pipe[1], "c", 1);
    (void)w;
    errno = saved;
}

typedef struct {
    int stage; /* 1 chdir, 2 exec, 3 tty */
    int err;
} child_failure;

/* In the forked child: becomes a session leader, wires up stdio, execs. Never returns. */
static void run_child(exec_req *r, const char *slave, int in_r, int out_w, int err_w, int report)
{
    child_failure f = {0, 0};
    setsid();
    if (r->tty) {
        int s = open(slave, O_RDWR | O_CLOEXEC); /* a session leader's first tty becomes its ctty */
        if (s < 0) {
            f.stage = 3;
            goto fail;
        }
        ioctl(s, TIOCSCTTY, 0);
        in_r = out_w = err_w = s;
    }
    if (in_r < 0)
        in_r = open("/dev/null", O_RDONLY | O_CLOEXEC); /* dup2 below clears CLOEXEC on fd 0 */
    if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0) {
        f.stage = 3;
        goto fail;
    }
    if (chdir(r->cwd) < 0) {
        f.stage = 1;
        goto fail;
    }
    reset_signals();
    execve(r->path, r->argv, r->envp);
    f.stage = 2;
fail:
    f.err = errno;
    (void)write_all(report, &f, sizeof f);
    _exit(127);
}

/* ---- the relay loop ---------------------------------------------------------------------- */

typedef struct {
    int sock;
    pid_t pid;
    int out_fd, err_fd; /* pipes' read ends, or the pty master as out_fd */
    int in_fd;          /* the stdin pipe's write end, or the pty master */
    int master;         /* the pty master, or -1 */
    int held_master;    /* the master after the slave's last close, kept open until the command exits */
    int out_eof_sent, err_eof_sent;
    int stdin_eof; /* 1: the client sent EOF of stdin, pass it on once the queue is written; 2: done */
    queue to_client, to_stdin;
    char *inbuf;
    size_t in_len;
    int exited, status, timed_out;
    double deadline, drain_until;
} session;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void close_output(session *s, int *fd, int type, int *eof_sent)
{
    if (*fd == s->master && s->master >= 0) { /* the pty: input goes too */
        s->in_fd = -1;
        s->master = -1;
        /* Closing the master hangs the terminal up, and the kernel sends SIGHUP to the
         * session leader: a command that has just closed its last tty descriptor on its way
         * out would die of it (exit 129) instead of exiting as it meant to. So the master is
         * kept (unread) until the command has exited, as a real terminal stays open. */
        s->held_master = *fd;
        *fd = -1;
    }
    close_fd(fd);
    if (!*eof_sent)
        q_frame(&s->to_client, type, NULL, 0);
    *eof_sent = 1;
}

static void reap(session *s)
{
    int st;
    if (s->exited)
        return;
    pid_t p;
    do
        p = waitpid(s->pid, &st, WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == s->pid) {
        s->exited = 1;
        s->status = st;
        s->drain_until = mono_now() + DRAIN_IDLE_S;
    }
}

static void client_gone(session *s)
{
    kill_session(s->pid);
    while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    _exit(0);
}

static void handle_ctrl(session *s, const char *payload, size_t len)
{
    jval *c = json_parse(payload, len, NULL);
    int bad = 0;
    const char *type = json_cstr(c, "type", NULL, &bad);
    if (type && !strcmp(type, "resize") && s->master >= 0) {
        double rows = json_num(c, "rows", 0, &bad), cols = json_num(c, "cols", 0, &bad);
        if (!bad && rows >= 1 && rows <= 65535 && cols >= 1 && cols <= 65535) {
            struct winsize ws = {(unsigned short)rows, (unsigned short)cols, 0, 0};
            ioctl(s->master, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH */
        }
    } else if (type && !strcmp(type, "signal") && !s->exited) {
        double sig = json_num(c, "signal", 0, &bad);
        if (!bad && sig >= 1 && sig < _NSIG)
            kill(-s->pid, (int)sig);
    }
    json_free(c);
}

/* Handles the complete frames in inbuf. Returns -1 on a protocol violation. */
static int client_frames(session *s)
{
    size_t off = 0;
    while (s->in_len - off >= 5) {
        unsigned char *h = (unsigned char *)s->inbuf + off;
        uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
        if (len > FCGA_MAX_FRAME)
            return -1;
        if (s->in_len - off < 5 + (size_t)len)
            break;
        const char *payload = s->inbuf + off + 5;
        if (h[0] == F_STDIN) {
            if (len == 0)
                s->stdin_eof = 1;
            else if (s->in_fd >= 0 && !s->stdin_eof)
                q_push(&s->to_stdin, payload, len);
        } else if (h[0] == F_CTRL) {
            handle_ctrl(s, payload, len);
        } /* other frame types are ignored */
        off += 5 + (size_t)len;
    }
    memmove(s->inbuf, s->inbuf + off, s->in_len - off);
    s->in_len -= off;
    return 0;
}

static void read_output(session *s, int *fd, int type, int *eof_sent)
{
    char buf[READ_CHUNK];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n > 0) {
        q_frame(&s->to_client, type, buf, (size_t)n);
        if (s->exited)
            s->drain_until = mono_now() + DRAIN_IDLE_S;
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) /* EIO: the pty's last slave closed */
        close_output(s, fd, type, eof_sent);
}

static void write_stdin(session *s)
{
    while (s->to_stdin.len && s->in_fd >= 0) {
        ssize_t w = write(s->in_fd, s->to_stdin.data + s->to_stdin.start, s->to_stdin.len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) { /* the command closed its stdin: drop the rest */
                q_pop(&s->to_stdin, s->to_stdin.len);
                if (s->master < 0)
                    close_fd(&s->in_fd);
            }
            return;
        }
        q_pop(&s->to_stdin, (size_t)w);
    }
}

static void finish_stdin(session *s)
{
    if (s->stdin_eof != 1 || s->to_stdin.len || s->in_fd < 0)
        return; /* 0: no EOF yet, 2: already passed on */
    if (s->master >= 0) {
        /* A terminal has no EOF of its own: type its EOF character (^D) once. */
        struct termios t;
        char eof = 4;
        if (tcgetattr(s->master, &t) == 0 && t.c_cc[VEOF])
            eof = (char)t.c_cc[VEOF];
        ssize_t w = write(s->master, &eof, 1);
        (void)w;
        s->stdin_eof = 2; /* done: the master stays open for output */
        return;
    }
    close_fd(&s->in_fd);
}

static void relay_loop(session *s)
{
    enum { P_SOCK, P_OUT, P_ERR, P_IN, P_CHLD, P_N };
    for (;;) {
        reap(s);
        double now = mono_now();
        if (s->exited && ((s->out_fd < 0 && s->err_fd < 0) || now >= s->drain_until))
            break;
        if (!s->exited && !s->timed_out && s->deadline > 0 && now >= s->deadline) {
            kill_session(s->pid);
            s->timed_out = 1;
        }
        struct pollfd p[P_N];
        memset(p, 0, sizeof p);
        p[P_SOCK].fd = s->sock;
        p[P_SOCK].events = POLLRDHUP;
        if (s->to_stdin.len < QUEUE_LIMIT && s->in_len < FCGA_MAX_FRAME + 5)
            p[P_SOCK].events |= POLLIN;
        if (s->to_client.len)
            p[P_SOCK].events |= POLLOUT;
        int room = s->to_client.len < QUEUE_LIMIT;
        p[P_OUT].fd = room ? s->out_fd : -1;
        p[P_OUT].events = POLLIN;
        p[P_ERR].fd = room ? s->err_fd : -1;
        p[P_ERR].events = POLLIN;
        p[P_IN].fd = s->to_stdin.len ? s->in_fd : -1;
        p[P_IN].events = POLLOUT;
        p[P_CHLD].fd = sigchld_pipe[0];
        p[P_CHLD].events = POLLIN;
        double until = s->exited ? s->drain_until : (!s->timed_out && s->deadline > 0 ? s->deadline : 0);
        int timeout = until > 0 ? (int)((until - now) * 1000) + 1 : -1;
        if (poll(p, P_N, timeout) < 0) {
            if (errno == EINTR)
                continue;
            client_gone(s);
        }
        if (p[P_CHLD].revents & POLLIN) {
            char tmp[64];
            while (read(sigchld_pipe[0], tmp, sizeof tmp) > 0)
                ;
        }
        if (p[P_SOCK].revents & POLLIN) {
            ssize_t n = read(s->sock, s->inbuf + s->in_len, FCGA_MAX_FRAME + 5 - s->in_len);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                client_gone(s);
            if (n > 0) {
                s->in_len += (size_t)n;
                if (client_frames(s) < 0)
                    client_gone(s); /* a frame over the limit: not a client we understand */
            }
        } else if (p[P_SOCK].revents & (POLLRDHUP | POLLHUP | POLLERR))
            client_gone(s);
        if (s->to_client.len && q_flush(&s->to_client, s->sock) < 0)
            client_gone(s);
        if (p[P_OUT].revents)
            read_output(s, &s->out_fd, F_STDOUT, &s->out_eof_sent);
        if (p[P_ERR].revents)
            read_output(s, &s->err_fd, F_STDERR, &s->err_eof_sent);
        write_stdin(s);
        finish_stdin(s);
    }
}

static void send_exit(session *s)
{
    int code = -1, sig = 0;
    if (WIFEXITED(s->status))
        code = WEXITSTATUS(s->status);
    else if (WIFSIGNALED(s->status)) {
        sig = WTERMSIG(s->status);
        code = 128 + sig;
    }
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "exit_code"); jb_int(&b, code);
    jb_key(&b, "signal");
    if (sig) jb_int(&b, sig);
    else jb_null(&b);
    jb_key(&b, "timed_out"); jb_bool(&b, s->timed_out);
    jb_obj_end(&b);
    q_frame(&s->to_client, F_EXIT, b.data, b.len);
    jb_free(&b);
    set_nonblock(s->sock, 0);
    struct timeval tv = {120, 0}; /* a client that stopped reading does not keep us forever */
    setsockopt(s->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (write_all(s->sock, s->to_client.data + s->to_client.start, s->to_client.len) == 0)
        s->to_client.len = 0;
}

static void send_started(int fd, pid_t pid)
{
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "ok"); jb_bool(&b, 1);
    jb_key(&b, "pid"); jb_int(&b, pid);
    jb_obj_end(&b);
    frame_send_buf(fd, F_RES, &b);
    jb_free(&b);
}

void op_exec(int fd, const jval *req)
{
    exec_req r;
    memset(&r, 0, sizeof r);
    if (parse_request(fd, req, &r) < 0)
        return;
    struct stat st;
    if (stat(r.cwd, &st) < 0) {
        send_error(fd, F_RES, errno == ENOTDIR ? "not_a_directory" : errno_code(errno),
                   "working directory %.300s: %s in the guest", r.cwd, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        send_error(fd, F_RES, "not_a_directory", "working directory %.300s is not a directory in the guest", r.cwd);
        return;
    }
    if (resolve_command(fd, &r) < 0)
        return;

    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, rep[2] = {-1, -1};
    int master = -1;
    char slave[128] = "";
    if (r.tty) {
        master = open_pty(slave, sizeof slave);
        if (master < 0) {
            send_error(fd, F_RES, "io_error", "cannot open a pty in the guest: %s (is devpts mounted on /dev/pts?)",
                       strerror(errno));
            return;
        }
        struct winsize ws = {r.rows, r.cols, 0, 0};
        ioctl(master, TIOCSWINSZ, &ws);
    } else if ((r.want_stdin && pipe2(in_p, O_CLOEXEC) < 0) || pipe2(out_p, O_CLOEXEC) < 0 ||
               pipe2(err_p, O_CLOEXEC) < 0) {
        send_error(fd, F_RES, "io_error", "pipe: %s", strerror(errno));
        return;
    }
    if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        send_error(fd, F_RES, "io_error", "pipe: %s", strerror(errno));
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    pid_t pid = fork();
    if (pid < 0) {
        send_error(fd, F_RES, "io_error", "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(rep[0]);
        run_child(&r, slave, in_p[0], out_p[1], err_p[1], rep[1]);
    }
    close(rep[1]);
    close_fd(&in_p[0]);
    close_fd(&out_p[1]);
    close_fd(&err_p[1]);
    child_failure f;
    int got = read_full(rep[0], &f, sizeof f);
    close(rep[0]);
    if (got == 0) { /* the child reported a failure instead of exec'ing */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (f.stage == 2 && (f.err == EACCES || f.err == ENOEXEC || f.err == ETXTBSY))
            send_error(fd, F_RES, "not_executable", "%.300s: %s", r.argv[0],
                       f.err == ENOEXEC ? "not an executable format for this guest" : strerror(f.err));
        else if (f.stage == 2 && f.err == ENOENT)
            send_error(fd, F_RES, "command_not_found",
                       "%.300s: %s (its interpreter or dynamic loader is missing in the guest)", r.argv[0],
                       strerror(f.err));
        else if (f.stage == 1)
            send_error(fd, F_RES, "not_found", "working directory %.300s: %s", r.cwd, strerror(f.err));
        else
            send_error(fd, F_RES, "io_error", "cannot start %.300s: %s", r.argv[0], strerror(f.err));
        return;
    }
    send_started(fd, pid);

    session s;
    memset(&s, 0, sizeof s);
    s.sock = fd;
    s.pid = pid;
    s.master = master;
    s.held_master = -1;
    s.out_fd = r.tty ? master : out_p[0];
    s.err_fd = r.tty ? -1 : err_p[0];
    s.in_fd = r.tty ? master : in_p[1];
    s.err_eof_sent = 0;
    s.deadline = r.timeout_s > 0 ? mono_now() + r.timeout_s : 0;
    s.inbuf = malloc(FCGA_MAX_FRAME + 5);
    if (!s.inbuf)
        abort();
    set_nonblock(fd, 1);
    if (s.out_fd >= 0)
        set_nonblock(s.out_fd, 1);
    if (s.err_fd >= 0)
        set_nonblock(s.err_fd, 1);
    if (s.in_fd >= 0)
        set_nonblock(s.in_fd, 1);
    relay_loop(&s);
    /* What is still open belongs to a background process that outlived the command. */
    if (s.out_fd >= 0)
        close_output(&s, &s.out_fd, F_STDOUT, &s.out_eof_sent);
    if (s.err_fd >= 0)
        close_output(&s, &s.err_fd, F_STDERR, &s.err_eof_sent);
    if (!s.err_eof_sent) {
        q_frame(&s.to_client, F_STDERR, NULL, 0);
        s.err_eof_sent = 1;
    }
    close_fd(&s.in_fd);
    close_fd(&s.held_master); /* the command has exited */
    send_exit(&s);
}
