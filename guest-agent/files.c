/* stat, get and put: file trees as ENTRY / DATA / FILE_END / END frames.
 *
 * get streams depth-first (a directory before its children), files in 1 MiB DATA
 * frames, so no file is ever held in memory, each followed by FILE_END with its checksum
 * (crc32 or sha256, as the request asked). put writes every file to a temporary name
 * beside its destination and moves it into place only when its size and checksum match;
 * a new top-level directory is built under a temporary name and renamed at END; files
 * replacing or joining existing ones are renamed at END. Any failure (or a vanished
 * client) removes every temporary, so nothing new is left at the destination.
 */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "agent.h"

#define CHUNK FCGA_MAX_FRAME /* 1 MiB: fewer frames for each side to handle */
#define IO_TIMEOUT_S 120 /* a client silent (or not reading) this long is gone */

static void set_io_timeouts(int fd)
{
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static const char *type_name(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "symlink";
    return "other";
}

/* readlink into a malloc'd string (NULL on failure). */
static char *read_link(const char *path, size_t hint)
{
    size_t cap = hint + 1 > 256 ? hint + 1 : 256;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf)
            abort();
        ssize_t n = readlink(path, buf, cap);
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if ((size_t)n < cap) {
            buf[n] = 0;
            return buf;
        }
        free(buf);
        cap *= 2;
    }
}

/* The stat fields shared by stat's and get's RES: type, mode, size, mtime, target. */
static void stat_fields(jbuf *b, const char *path, const struct stat *st)
{
    jb_key(b, "type"); jb_cstr(b, type_name(st->st_mode));
    jb_key(b, "mode"); jb_int(b, st->st_mode & 07777);
    jb_key(b, "size"); jb_int(b, (long long)st->st_size);
    jb_key(b, "mtime"); jb_time(b, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    jb_key(b, "target");
    char *t = S_ISLNK(st->st_mode) ? read_link(path, (size_t)st->st_size) : NULL;
    if (t) jb_cstr(b, t);
    else jb_null(b);
    free(t);
}

/* RES {"ok": true, <stat fields>}, and for a get the checksum its FILE_ENDs carry. */
static int send_stat_res(int fd, const char *path, const struct stat *st, const char *checksum)
{
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "ok"); jb_bool(&b, 1);
    stat_fields(&b, path, st);
    if (checksum) {
        jb_key(&b, "checksum"); jb_cstr(&b, checksum);
    }
    jb_obj_end(&b);
    int r = frame_send_buf(fd, F_RES, &b);
    jb_free(&b);
    return r;
}

/* Reads the request's absolute "path"; sends RES bad_request and returns NULL otherwise. */
static const char *request_path(int fd, const jval *req)
{
    int bad = 0;
    const char *p = json_cstr(req, "path", NULL, &bad);
    if (bad || !p || p[0] != '/') {
        send_error(fd, F_RES, "bad_request", "\"path\" must be an absolute path in the guest");
        return NULL;
    }
    return p;
}

static void send_path_error(int fd, int type, int err, const char *path)
{
    send_error(fd, type, errno_code(err), "%.400s: %s in the guest", path,
               err == ENOENT ? "no such file or directory" : strerror(err));
}

void op_stat(int fd, const jval *req)
{
    const char *path = request_path(fd, req);
    struct stat st;
    if (!path)
        return;
    if (lstat(path, &st) < 0) {
        send_path_error(fd, F_RES, errno, path);
        return;
    }
    send_stat_res(fd, path, &st, NULL);
}

/* ---- get ----------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    long long entries, bytes;
    char *chunk;
    checksum_alg alg;
} getter;

/* A failure in the middle of a get: RESULT with the error, and the connection closes. */
static void get_abort(getter *g, int err, const char *path, const char *what)
{
    send_error(g->fd, F_RESULT, errno_code(err), "%.400s: %s: %s", path, what, strerror(err));
    _exit(0);
}

static void send_entry(getter *g, const char *rel, const struct stat *st, const char *target)
{
    jbuf b;
    jb_init(&b);
    jb_obj(&b);
    jb_key(&b, "path"); jb_cstr(&b, rel);
    jb_key(&b, "type"); jb_cstr(&b, type_name(st->st_mode));
    jb_key(&b, "mode"); jb_int(&b, st->st_mode & 07777);
    jb_key(&b, "mtime"); jb_time(&b, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    if (S_ISREG(st->st_mode)) {
        jb_key(&b, "size"); jb_int(&b, (long long)st->st_size);
    }
    if (target) {
        jb_key(&b, "target"); jb_cstr(&b, target);
    }
    jb_obj_end(&b);
    if (frame_send_buf(g->fd, F_ENTRY, &b) < 0)
        _exit(0);
    jb_free(&b);
    g->entries++;
}

static void send_file(getter *g, const char *path, const char *rel, const struct stat *st)
{
    int f = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (f < 0)
        get_abort(g, errno, path, "cannot open");
    send_entry(g, rel, st, NULL);
    checksum_ctx sum;
    checksum_init(&sum, g->alg);
    off_t left = st->st_size; /* exactly the size the ENTRY announced */
    while (left > 0) {
        size_t want = left < CHUNK ? (size_t)left : CHUNK;
        ssize_t n = read(f, g->chunk, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            get_abort(g, errno, path, "read failed");
        if (n == 0)
            get_abort(g, EIO, path, "the file shrank while it was read");
        checksum_update(&sum, g->chunk, (size_t)n);
        if (frame_send(g->fd, F_DATA, g->chunk, (size_t)n) < 0)
            _exit(0);
        left -= n;
        g->bytes += n;
    }
    close(f);
    char hex[65];
    checksum_final_hex(&sum, hex);
    char msg[96];
    int n = snprintf(msg, sizeof msg, "{\"%s\":\"%s\"}", checksum_name(g->alg), hex);
    if (frame_send(g->fd, F_FILE_END, msg, (size_t)n) < 0)
        _exit(0);
}

static void walk(getter *g, const char *path, const char *rel)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        get_abort(g, errno, path, "cannot stat");
    if (S_ISREG(st.st_mode)) {
        send_file(g, path, rel, &st);
    } else if (S_ISLNK(st.st_mode)) {
        char *t = read_link(path, (size_t)st.st_size);
        if (!t)
            get_abort(g, errno, path, "cannot read the link");
        send_entry(g, rel, &st, t);
        free(t);
    } else if (S_ISDIR(st.st_mode)) {
        struct dirent **names;
        int n = scandir(path, &names, NULL, alphasort);
        if (n < 0)
            get_abort(g, errno, path, "cannot list");
        send_entry(g, rel, &st, NULL);
        for (int i = 0; i < n; i++) {
            const char *name = names[i]->d_name;
            if (strcmp(name, ".") && strcmp(name, "..")) {
                size_t pl = strlen(path), rl = strlen(rel), nl = strlen(name);
                char *cp = malloc(pl + nl + 2), *cr = malloc(rl + nl + 2);
                if (!cp || !cr)
                    abort();
                sprintf(cp, "%s%s%s", path, path[pl - 1] == '/' ? "" : "/", name);
                sprintf(cr, "%s/%s", rel, name);
                walk(g, cp, cr);
                free(cp);
                free(cr);
            }
            free(names[i]);
        }
        free(names);
    } /* devices, fifos and sockets are skipped: they have no content to copy */
}

void op_get(int fd, const jval *req)
{
    const char *path = request_path(fd, req);
    struct stat st;
    checksum_alg alg;
    if (!path || checksum_from_request(fd, req, &alg) < 0)
        return;
    if (lstat(path, &st) < 0) {
        send_path_error(fd, F_RES, errno, path);
        return;
    }
    /* The tree's top entry is named after the last component of the path. */
    char *copy = strdup(path);
    if (!copy)
        abort();
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = 0;
    const char *base = strrchr(copy, '/') + 1;
    if (!*base) {
        send_error(fd, F_RES, "bad_request", "cannot get / itself: get the directories below it");
        free(copy);
        return;
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
        send_error(fd, F_RES, "bad_request", "%.400s is not a file, directory or symlink", path);
        free(copy);
        return;
    }
    set_io_timeouts(fd);
    if (send_stat_res(fd, copy, &st, checksum_name(alg)) < 0) {
        free(copy);
        return;
    }
    getter g = {fd, 0, 0, malloc(CHUNK), alg};
    if (!g.chunk)
        abort();
    walk(&g, copy, base);
    char end[96];
    int n = snprintf(end, sizeof end, "{\"entries\":%lld,\"bytes\":%lld}", g.entries, g.bytes);
    frame_send(fd, F_END, end, (size_t)n);
    free(g.chunk);
    free(copy);
}
