/*
 * fc-guest-agent: the fc-macos guest agent (protocol version 1).
 *
 * One static binary, no dependencies beyond libc (built against musl by zig cc).
 * docs/guest-agent-protocol.md describes the wire format; this header declares the
 * pieces shared by the small modules:
 *
 *   fc-guest-agent.c  command line, listeners, accept loop, request dispatch
 *   init.c            PID-1 shim and the --supervise loop
 *   io.c              EINTR-safe reads/writes, frames, logging, small helpers
 *   json.c            a minimal JSON reader (DOM) and writer
 *   sha256.c          SHA-256 (FIPS 180-4)
 *   crc32.c           CRC-32 (IEEE, zlib's crc32)
 *   checksum.c        the file transfers' checksum: crc32 or sha256, as the client asks
 *   exec.c            the exec operation (pipes or a pty, signals, timeout)
 *   files.c           stat and get (file trees, streamed, checksummed)
 *   put.c             put (staged, all or nothing)
 *   net.c             info and connect
 */
#ifndef FC_GUEST_AGENT_H
#define FC_GUEST_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef FCGA_VERSION /* build.py passes the package version */
#define FCGA_VERSION "0.1.0"
#endif
#define FCGA_PROTOCOL 1
#define FCGA_DEFAULT_PORT 10240
#define FCGA_MAX_FRAME (1u << 20)

/* Frame types (one byte on the wire). */
enum {
    F_REQ = 0x01,
    F_RES = 0x02,
    F_STDIN = 0x03,
    F_STDOUT = 0x04,
    F_STDERR = 0x05,
    F_CTRL = 0x06,
    F_EXIT = 0x07,
    F_ENTRY = 0x08,
    F_DATA = 0x09,
    F_FILE_END = 0x0A,
    F_END = 0x0B,
    F_RESULT = 0x0C,
};

/* ---- json.c ---------------------------------------------------------------------------- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

/* A parsed JSON value. Strings are NUL-terminated copies; `len` is their byte length
 * (a string holding a NUL byte has strlen(str) != len: callers that need C strings check). */
typedef struct jval {
    jtype type;
    int boolean;
    double num;
    char *str;
    size_t len;
    char *key;           /* member name when inside an object */
    struct jval *child;  /* first element / member */
    struct jval *next;   /* next sibling */
} jval;

/* Parses `n` bytes; returns NULL on malformed input (with *err set to a static text). */
jval *json_parse(const char *text, size_t n, const char **err);
void json_free(jval *v);
const jval *json_get(const jval *obj, const char *key);
/* Typed member access: return `dflt` when the member is missing or null; set *bad = 1 when it
 * has the wrong type. json_cstr returns NULL for a string holding a NUL byte (and sets *bad). */
const char *json_cstr(const jval *obj, const char *key, const char *dflt, int *bad);
double json_num(const jval *obj, const char *key, double dflt, int *bad);
int json_bool(const jval *obj, const char *key, int dflt, int *bad);

/* A growing output buffer; also used by the writer. Allocation failure aborts the process
 * (each connection is its own process: the client sees the connection close). */
typedef struct {
    char *data;
    size_t len, cap;
    int first[32]; /* per nesting level: no member written yet */
    int depth;
} jbuf;

void jb_init(jbuf *b);
void jb_free(jbuf *b);
void jb_raw(jbuf *b, const void *p, size_t n);
void jb_obj(jbuf *b);      /* { */
void jb_obj_end(jbuf *b);  /* } */
void jb_arr(jbuf *b);      /* [ */
void jb_arr_end(jbuf *b);  /* ] */
void jb_key(jbuf *b, const char *key); /* member name (adds the comma) */
void jb_elem(jbuf *b);     /* before an array element (adds the comma) */
/* Values. Bytes that are not valid UTF-8 are written as lone surrogates \udcXX (Python's
 * surrogateescape), so any file name survives the round trip. */
void jb_str(jbuf *b, const char *s, size_t n);
void jb_cstr(jbuf *b, const char *s);
void jb_int(jbuf *b, long long v);
void jb_double(jbuf *b, double v);
void jb_time(jbuf *b, long long sec, long nsec); /* seconds with nanoseconds: 12.000000001 */
void jb_bool(jbuf *b, int v);
void jb_null(jbuf *b);

/* ---- sha256.c -------------------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t total;
    unsigned char block[64];
    size_t used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final_hex(sha256_ctx *c, char out[65]);
/* The block functions behind sha256_update (exposed for the test harness): portable C, and
 * the CPU's SHA instructions (x86 SHA extensions / ARMv8 SHA2) where sha256_have_accel(). */
void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t n);
void sha256_blocks_accel(uint32_t h[8], const unsigned char *p, size_t n);
int sha256_have_accel(void);

/* ---- crc32.c --------------------------------------------------------------------------- */

/* Continues a CRC-32 like zlib's crc32(crc, p, n): start with 0, pass each result back in.
 * crc32_update uses the CPU's CRC32 instructions (ARMv8) where crc32_have_accel(), else the
 * portable code; both are exposed for the test harness. */
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);
uint32_t crc32_update_portable(uint32_t crc, const void *data, size_t n);
uint32_t crc32_update_accel(uint32_t crc, const void *data, size_t n);
int crc32_have_accel(void);

/* ---- checksum.c ------------------------------------------------------------------------ */

typedef enum { CK_CRC32, CK_SHA256 } checksum_alg;

typedef struct {
    checksum_alg alg;
    uint32_t crc;
    sha256_ctx sha;
} checksum_ctx;

/* The request's "checksum" ("crc32" or "sha256"; absent or null: sha256). 0 ok; -1 after
 * answering RES bad_request for another value. */
int checksum_from_request(int fd, const jval *req, checksum_alg *alg);
/* The algorithm's name on the wire: the RES's "checksum" and FILE_END's key. */
const char *checksum_name(checksum_alg alg);
/* The JSON array of every accepted name (info's "checksums"). */
void checksum_list(jbuf *b);
void checksum_init(checksum_ctx *c, checksum_alg alg);
void checksum_update(checksum_ctx *c, const void *data, size_t n);
/* Lowercase hex: 8 digits for crc32, 64 for sha256. */
void checksum_final_hex(checksum_ctx *c, char out[65]);

/* ---- io.c ------------------------------------------------------------------------------ */

/* Blocking helpers, restarted on EINTR; write_all handles partial writes. Return 0 / -1. */
int write_all(int fd, const void *p, size_t n);
/* Reads exactly n bytes: 0 ok, -1 error (errno), 1 clean EOF before the first byte. */
int read_full(int fd, void *p, size_t n);

typedef struct {
    int type;
    uint32_t len;
    char *payload; /* malloc'd, NUL-terminated (len bytes + 0) */
} frame;

/* Reads one frame (blocking). 0 ok, 1 clean EOF at a frame boundary, -1 error or oversize. */
int frame_read(int fd, frame *f);
/* The same, into the caller's buffer *buf of *cap bytes, grown (realloc) when a frame needs
 * more: f->payload points into it, valid until the next call; the caller frees *buf. For a
 * stream of large frames (put's DATA) this saves an allocation, and with musl a fresh
 * mapping and its page faults, per frame. */
int frame_read_into(int fd, frame *f, char **buf, size_t *cap);
void frame_free(frame *f);
int frame_send(int fd, int type, const void *payload, size_t len);
int frame_send_buf(int fd, int type, const jbuf *b);
/* RES/RESULT {"ok":false,"error":code,"message":msg}. */
int send_error(int fd, int type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error code for an errno value (not_found, permission_denied, ...; io_error otherwise). */
const char *errno_code(int err);

/* After an error answer: stop sending, discard what the client still sends (up to 2 s, or
 * until it closes), then close; so the answer is not lost to a connection reset. */
void linger_close(int fd);
void set_nonblock(int fd, int on);
double mono_now(void);
/* Log lines go to stderr, or to /dev/kmsg after log_to_kmsg_if_possible(): log_msg for
 * problems (console-visible warning level), log_note for routine facts (debug level, kept
 * off the serial console where a person may be typing). Nothing is written while log_muted
 * (the supervisor mutes a server that keeps failing the same way). */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int log_muted;
void log_to_kmsg_if_possible(void);
/* Resets every signal disposition and unblocks all signals (for a child about to exec). */
void reset_signals(void);
/* SIGKILLs the process group `pgid` and every process of session `sid` (so nothing a command
 * started outlives a timeout or a vanished client). */
void kill_session(pid_t sid);

/* ---- operations ------------------------------------------------------------------------ */

void op_info(int fd, const jval *req);
void op_exec(int fd, const jval *req);
void op_stat(int fd, const jval *req);
void op_get(int fd, const jval *req);
void op_put(int fd, const jval *req);
void op_connect(int fd, const jval *req);

/* ---- fc-guest-agent.c / init.c --------------------------------------------------------- */

/* Serves forever on `addr` (vsock:PORT, unix:PATH, tcp:HOST:PORT). Returns only on failure
 * to listen (exit status for the process). */
int serve(const char *addr);
/* The supervisor loop (forks `serve` and restarts it). `detach`: fork into the background,
 * own session. Never returns unless SIGTERM/SIGINT stops it. */
int supervise(const char *addr, int detach);
/* PID-1 shim: start the supervisor, exec the real init. Never returns. */
void pid1_shim(int argc, char **argv);

#endif
