/* put: receives a file tree into an existing directory, all or nothing.
 *
 * Staging, so that a failure or a vanished client leaves nothing new behind:
 * - a top-level directory that does not exist yet is built as DIR/.fcga-PID-N.tmp and
 *   renamed to its name at END;
 * - every file and symlink is written as .fcga-PID-N.tmp beside its destination; inside a
 *   staged directory it takes its name at FILE_END (once its size and checksum, crc32 or
 *   sha256 as the request asked, match), elsewhere (replacing or joining existing
 *   files) at END;
 * - directories made inside existing ones are remembered and removed again on failure.
 * Directory modes and mtimes are applied at END, children before parents.
 */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent.h"

#define IO_TIMEOUT_S 120
/* The receive buffer of a put's vsock connection (Linux's default is 256 KiB, what one DATA
 * frame of the reference client holds): the host may send this much ahead while the guest
 * writes a frame out, so the stream does not stall on every frame. Measured under emulation,
 * 1 MiB took a put from about 38 to 54 MiB/s; 2 and 4 MiB added nothing. */
#define VSOCK_BUFFER (1ull << 20)

typedef struct {
    char *name;   /* top-level entry name */
    char *staged; /* its temporary name while it is new, else NULL (joins an existing dir) */
} top;

typedef struct {
    char *from, *to;
} rename_op;

typedef struct {
    char *rel; /* path relative to DIR (final names) */
    mode_t mode;
    struct timespec mtime;
} dir_meta;

typedef struct {
    int sock;
    const char *dir;
    top *tops;
    size_t ntops;
    rename_op *renames; /* done at END */
    size_t nrenames;
    char **made;        /* directories created inside existing ones (rollback) */
    size_t nmade;
    dir_meta *dirs;
    size_t ndirs;
    unsigned counter;
    long long entries, bytes;
    /* the file being received */
    int file_fd;
    char *file_tmp, *file_final;
    int file_staged;    /* inside a staged top: rename at FILE_END */
    long long file_size, file_got;
    mode_t file_mode;
    struct timespec file_mtime;
    checksum_alg alg;   /* what the request asked for: FILE_END's key */
    checksum_ctx sum;
} putter;

static void *grow(void *arr, size_t n, size_t size)
{
    void *p = realloc(arr, (n + 1) * size);
    if (!p)
        abort();
    return p;
}

static char *strfmt(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (!s)
        abort();
    snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

/* Removes every temporary and every directory this put made. */
static void rollback(putter *p)
{
    if (p->file_fd >= 0)
        close(p->file_fd);
    if (p->file_tmp)
        unlink(p->file_tmp);
    for (size_t i = 0; i < p->nrenames; i++)
        unlink(p->renames[i].from);
    for (size_t i = 0; i < p->ntops; i++)
        if (p->tops[i].staged)
            nftw(p->tops[i].staged, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = p->nmade; i-- > 0;)
        rmdir(p->made[i]);
}

/* Sends RESULT with the error, undoes everything, lets the client read it, exits. */
static void fail(putter *p, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void fail(putter *p, const char *code, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rollback(p);
    send_error(p->sock, F_RESULT, code, "%s", msg);
    linger_close(p->sock); /* the client's frames in flight must not reset the RESULT away */
    _exit(0);
}

static void fail_errno(putter *p, int err, const char *what, const char *path)
{
    fail(p, errno_code(err), "%s %.400s in the guest: %s", what, path, strerror(err));
}

static char *tmp_in(putter *p, const char *dir)
{
    char name[64];
    snprintf(name, sizeof name, "/.fcga-%d-%u.tmp", (int)getpid(), p->counter++);
    return strfmt(dir, name, "");
}

/* A relative entry path is well-formed: no empty, "." or ".." components, not absolute. */
static int valid_rel(const char *rel)
{
    if (!*rel || rel[0] == '/')
        return 0;
    for (const char *c = rel; *c;) {
        size_t n = strcspn(c, "/");
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += n;
        if (*c == '/' && !*++c)
            return 0; /* trailing slash */
    }
    return 1;
}

static struct timespec to_timespec(double t)
{
    struct timespec ts;
    double s = floor(t);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((t - s) * 1e9 + 0.5);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static top *find_top(putter *p, const char *name, size_t n)
{
    for (size_t i = 0; i < p->ntops; i++)
        if (strlen(p->tops[i].name) == n && !strncmp(p->tops[i].name, name, n))
            return &p->tops[i];
    return NULL;
}

static top *add_top(putter *p, const char *name, size_t n, char *staged)
{
    p->tops = grow(p->tops, p->ntops, sizeof *p->tops);
    top *t = &p->tops[p->ntops++];
    t->name = strndup(name, n);
    if (!t->name)
        abort();
    t->staged = staged;
    return t;
}

/* Where an entry goes now: its path with the top-level name replaced by the staged name.
 * Sets *staged when it lies inside a staged (new) top-level directory. */
static char *current_path(putter *p, const char *rel, int is_top_dir, int *staged)
{
    size_t n = strcspn(rel, "/");
    top *t = find_top(p, rel, n);
    if (!t) {
        char *name = strndup(rel, n);
        char *final = strfmt(p->dir, "/", name);
        struct stat st;
        int exists = stat(final, &st) == 0;
        if (exists && S_ISDIR(st.st_mode))
            t = add_top(p, rel, n, NULL);
        else if (rel[n] == 0 && !is_top_dir) {
            free(name);
            *staged = 0;
            return final; /* a top-level file or symlink: goes straight into DIR */
        } else if (exists)
            fail(p, "exists", "%.400s exists in the guest and is not a directory", final);
        else if (rel[n] != 0)
            fail(p, "not_found", "%.400s: its directory %.200s was not sent first and does not exist in the guest",
                 rel, name);
        else {
            char *tmp = tmp_in(p, p->dir);
            if (mkdir(tmp, 0700) < 0)
                fail_errno(p, errno, "cannot create a directory in", p->dir);
            t = add_top(p, rel, n, tmp);
        }
        free(name);
        free(final);
    }
    *staged = t->staged != NULL;
    return strfmt(t->staged ? t->staged : p->dir, t->staged ? "" : "/", t->staged ? rel + n : rel);
}

static char *parent_of(const char *path)
{
    char *d = strdup(path);
    if (!d)
        abort();
    char *slash = strrchr(d, '/');
    if (slash == d)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    return d;
}

static void begin_entry(putter *p, const frame *f)
{
    int bad = 0;
    const char *err = NULL;
    jval *e = json_parse(f->payload, f->len, &err);
    const char *rel = json_cstr(e, "path", NULL, &bad);
    const char *type = json_cstr(e, "type", NULL, &bad);
    double mode = json_num(e, "mode", -1, &bad);
    double mtime = json_num(e, "mtime", 0, &bad);
    double size = json_num(e, "size", 0, &bad);
    const char *target = json_cstr(e, "target", NULL, &bad);
    if (!e || bad || !rel || !type || mode < 0 || mode > 07777 || size < 0)
        fail(p, "bad_request", "bad ENTRY: it needs path, type and mode (0-07777), numeric mtime and size");
    if (!valid_rel(rel))
        fail(p, "bad_request", "bad entry path '%.300s': relative, '/'-separated, without '.', '..' or empty parts", rel);
    int is_dir = !strcmp(type, "dir"), is_file = !strcmp(type, "file"), is_link = !strcmp(type, "symlink");
    if (!is_dir && !is_file && !is_link)
        fail(p, "bad_request", "bad entry type '%.50s' (file, dir or symlink)", type);
    if (is_link && (!target || !*target))
        fail(p, "bad_request", "symlink entry '%.300s' needs a target", rel);
    int staged;
    char *path = current_path(p, rel, is_dir && !strchr(rel, '/'), &staged);
    char *parent = parent_of(path);
    struct stat st;
    if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))
        fail(p, "not_found", "%.300s: its directory does not exist in the guest (send directories first)", rel);
    int exists = lstat(path, &st) == 0;
    struct timespec mt = to_timespec(mtime);
    p->entries++;
    if (is_dir) {
        if (exists && !S_ISDIR(st.st_mode))
            fail(p, "exists", "%.400s exists in the guest and is not a directory", path);
        if (!exists) {
            if (mkdir(path, 0700) < 0)
                fail_errno(p, errno, "cannot create", path);
            if (!staged) {
                p->made = grow(p->made, p->nmade, sizeof *p->made);
                p->made[p->nmade++] = strdup(path);
            }
        }
        p->dirs = grow(p->dirs, p->ndirs, sizeof *p->dirs);
        p->dirs[p->ndirs++] = (dir_meta){strdup(rel), (mode_t)mode, mt};
        free(path);
    } else {
        if (exists && S_ISDIR(st.st_mode))
            fail(p, "exists", "%.400s is a directory in the guest: it cannot be replaced by a %s", path, type);
        char *tmp = tmp_in(p, parent);
        if (is_link) {
            if (symlink(target, tmp) < 0)
                fail_errno(p, errno, "cannot create a symlink in", parent);
            struct timespec ts[2] = {mt, mt};
            utimensat(AT_FDCWD, tmp, ts, AT_SYMLINK_NOFOLLOW);
            if (staged) {
                if (rename(tmp, path) < 0)
                    fail_errno(p, errno, "cannot rename into", path);
                free(tmp);
                free(path);
            } else {
                p->renames = grow(p->renames, p->nrenames, sizeof *p->renames);
                p->renames[p->nrenames++] = (rename_op){tmp, path};
            }
        } else {
            p->file_fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (p->file_fd < 0)
                fail_errno(p, errno, "cannot create a file in", parent);
            p->file_tmp = tmp;
            p->file_final = path;
            p->file_staged = staged;
            p->file_size = (long long)size;
            p->file_got = 0;
            p->file_mode = (mode_t)mode;
            p->file_mtime = mt;
            checksum_init(&p->sum, p->alg);
        }
    }
    free(parent);
    json_free(e);
}

static void end_file(putter *p, const frame *f)
{
    int bad = 0;
    jval *e = json_parse(f->payload, f->len, NULL);
    const char *name = checksum_name(p->alg);
    const char *want = json_cstr(e, name, NULL, &bad);
    char got[65];
    checksum_final_hex(&p->sum, got);
    if (!want || bad)
        fail(p, "bad_request", "FILE_END needs {\"%s\": HEX} (the checksum this put asked for)", name);
    if (p->file_got != p->file_size)
        fail(p, "checksum_mismatch", "%.400s: received %lld bytes, the entry announced %lld", p->file_final,
             p->file_got, p->file_size);
    if (strcasecmp(want, got))
        fail(p, "checksum_mismatch", "%.400s: %s of the received bytes is %s, the sender's is %.64s",
             p->file_final, name, got, want);
    json_free(e);
    if (fchmod(p->file_fd, p->file_mode) < 0)
        fail_errno(p, errno, "cannot chmod", p->file_tmp);
    struct timespec ts[2] = {p->file_mtime, p->file_mtime};
    futimens(p->file_fd, ts);
    int r = close(p->file_fd);
    p->file_fd = -1;
    if (r < 0)
        fail_errno(p, errno, "cannot write", p->file_final);
    if (p->file_staged) {
        if (rename(p->file_tmp, p->file_final) < 0)
            fail_errno(p, errno, "cannot rename into", p->file_final);
        free(p->file_tmp);
        free(p->file_final);
    } else {
        p->renames = grow(p->renames, p->nrenames, sizeof *p->renames);
        p->renames[p->nrenames++] = (rename_op){p->file_tmp, p->file_final};
    }
    p->file_tmp = p->file_final = NULL;
}

static void finish(putter *p, const frame *f)
{
    int bad = 0;
    jval *e = json_parse(f->payload, f->len, NULL);
    double entries = json_num(e, "entries", -1, &bad), bytes = json_num(e, "bytes", -1, &bad);
    json_free(e);
    if (p->file_tmp)
        fail(p, "bad_request", "END before the FILE_END of %.400s", p->file_final);
    if (bad || entries != (double)p->entries || bytes != (double)p->bytes)
        fail(p, "bad_request", "END says %.0f entries and %.0f bytes, %lld and %lld arrived", entries, bytes,
             p->entries, p->bytes);
    /* From here on the tree goes live. */
    for (size_t i = 0; i < p->nrenames; i++)
        if (rename(p->renames[i].from, p->renames[i].to) < 0)
            fail_errno(p, errno, "cannot rename into", p->renames[i].to);
    p->nrenames = 0;
    for (size_t i = 0; i < p->ntops; i++)
        if (p->tops[i].staged) {
            char *final = strfmt(p->dir, "/", p->tops[i].name);
            if (rename(p->tops[i].staged, final) < 0)
                fail_errno(p, errno, "cannot rename into", final);
            p->tops[i].staged = NULL;
            free(final);
        }
    p->nmade = 0;
    for (size_t i = p->ndirs; i-- > 0;) {
        char *path = strfmt(p->dir, "/", p->dirs[i].rel);
        chmod(path, p->dirs[i].mode);
        struct timespec ts[2] = {p->dirs[i].mtime, p->dirs[i].mtime};
        utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
        free(path);
    }
    char msg[96];
    int n = snprintf(msg, sizeof msg, "{\"ok\":true,\"entries\":%lld,\"bytes\":%lld}", p->entries, p->bytes);
    frame_send(p->sock, F_RESULT, msg, (size_t)n);
}

void op_put(int fd, const jval *req)
{
    int bad = 0;
    const char *dir = json_cstr(req, "path", NULL, &bad);
    struct stat st;
    checksum_alg alg;
    if (bad || !dir || dir[0] != '/') {
        send_error(fd, F_RES, "bad_request", "\"path\" must be an absolute path in the guest");
        return;
    }
    if (checksum_from_request(fd, req, &alg) < 0)
        return;
    if (stat(dir, &st) < 0) {
        send_error(fd, F_RES, errno_code(errno), "%.400s: %s in the guest", dir,
                   errno == ENOENT ? "no such directory" : strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        send_error(fd, F_RES, "not_a_directory", "%.400s is not a directory in the guest", dir);
        return;
    }
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    unsigned long long vbuf = VSOCK_BUFFER; /* fails harmlessly on unix: and tcp: listeners */
    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &vbuf, sizeof vbuf);
    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &vbuf, sizeof vbuf);
    char res[64];
    int n = snprintf(res, sizeof res, "{\"ok\":true,\"checksum\":\"%s\"}", checksum_name(alg));
    if (frame_send(fd, F_RES, res, (size_t)n) < 0)
        return;
    putter p;
    memset(&p, 0, sizeof p);
    p.sock = fd;
    p.file_fd = -1;
    p.alg = alg;
    /* DIR without trailing slashes (keeps "/" as it is). */
    char *d = strdup(dir);
    size_t len = strlen(d);
    while (len > 1 && d[len - 1] == '/')
        d[--len] = 0;
    p.dir = len == 1 ? "" : d; /* "" + "/name" = "/name" */
    char *buf = NULL; /* every frame is read into this one buffer */
    size_t cap = 0;
    for (;;) {
        frame f;
        int r = frame_read_into(fd, &f, &buf, &cap);
        if (r != 0) { /* cut off: undo, nobody to tell */
            rollback(&p);
            return;
        }
        switch (f.type) {
        case F_ENTRY:
            if (p.file_tmp)
                fail(&p, "bad_request", "ENTRY before the FILE_END of %.400s", p.file_final);
            begin_entry(&p, &f);
            break;
        case F_DATA:
            if (!p.file_tmp)
                fail(&p, "bad_request", "DATA outside a file entry");
            if (write_all(p.file_fd, f.payload, f.len) < 0)
                fail_errno(&p, errno, "cannot write", p.file_final);
            checksum_update(&p.sum, f.payload, f.len);
            p.file_got += f.len;
            p.bytes += f.len;
            break;
        case F_FILE_END:
            if (!p.file_tmp)
                fail(&p, "bad_request", "FILE_END outside a file entry");
            end_file(&p, &f);
            break;
        case F_END:
            finish(&p, &f);
            free(buf);
            return;
        default:
            fail(&p, "bad_request", "unexpected frame type 0x%02x in a put", f.type);
        }
    }
}
