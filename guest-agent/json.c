/* A minimal JSON reader (into a small DOM) and writer: enough for the protocol's
 * objects, with full string escapes (\uXXXX, surrogate pairs) and lone low surrogates
 * \udc80-\udcff standing for raw non-UTF-8 bytes (Python's surrogateescape). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define MAX_DEPTH 32

typedef struct {
    const char *p, *end;
    const char *err;
} parser;

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n);
    if (!p)
        abort();
    return p;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(jbuf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    jb_raw(b, u, n);
}

/* Parses a string (ps->p at the opening quote) into a malloc'd buffer. */
static char *parse_string(parser *ps, size_t *len)
{
    jbuf b;
    jb_init(&b);
    ps->p++;
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p++;
        if (c == '"') {
            jb_raw(&b, "", 1);
            *len = b.len - 1;
            return b.data;
        }
        if (c < 0x20) {
            ps->err = "control character in a string";
            break;
        }
        if (c != '\\') {
            jb_raw(&b, &c, 1);
            continue;
        }
        if (ps->p >= ps->end)
            break;
        char e = *ps->p++;
        unsigned cp;
        switch (e) {
        case '"': jb_raw(&b, "\"", 1); continue;
        case '\\': jb_raw(&b, "\\", 1); continue;
        case '/': jb_raw(&b, "/", 1); continue;
        case 'b': jb_raw(&b, "\b", 1); continue;
        case 'f': jb_raw(&b, "\f", 1); continue;
        case 'n': jb_raw(&b, "\n", 1); continue;
        case 'r': jb_raw(&b, "\r", 1); continue;
        case 't': jb_raw(&b, "\t", 1); continue;
        case 'u':
            if (hex4(ps, &cp) < 0) {
                ps->err = "bad \\u escape";
                goto fail;
            }
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                    ps->p += 2;
                    if (hex4(ps, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF) {
                        ps->err = "bad surrogate pair";
                        goto fail;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else {
                    ps->err = "lone high surrogate";
                    goto fail;
                }
            } else if (cp >= 0xDC80 && cp <= 0xDCFF) {
                unsigned char raw = (unsigned char)(cp - 0xDC00); /* surrogateescape byte */
                jb_raw(&b, &raw, 1);
                continue;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                ps->err = "lone low surrogate";
                goto fail;
            }
            put_utf8(&b, cp);
            continue;
        default:
            ps->err = "bad escape";
            goto fail;
        }
    }
    if (!ps->err)
        ps->err = "unterminated string";
fail:
    jb_free(&b);
    return NULL;
}

static jval *parse_value(parser *ps, int depth);

static jval *parse_container(parser *ps, int depth, int is_obj)
{
    jval *v = xcalloc(1, sizeof *v);
    v->type = is_obj ? J_OBJ : J_ARR;
    jval **tail = &v->child;
    char close = is_obj ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (is_obj) {
            size_t klen;
            if (ps->p >= ps->end || *ps->p != '"' || !(key = parse_string(ps, &klen))) {
                if (!ps->err)
                    ps->err = "expected a member name";
                goto fail;
            }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                free(key);
                ps->err = "expected ':'";
                goto fail;
            }
            ps->p++;
        }
        jval *item = parse_value(ps, depth + 1);
        if (!item) {
            free(key);
            goto fail;
        }
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            return v;
        }
        ps->err = is_obj ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
fail:
    json_free(v);
    return NULL;
}

static jval *parse_value(parser *ps, int depth)
{
    if (depth > MAX_DEPTH) {
        ps->err = "nested too deeply";
        return NULL;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        ps->err = "unexpected end";
        return NULL;
    }
    char c = *ps->p;
    if (c == '{' || c == '[')
        return parse_container(ps, depth, c == '{');
    jval *v = xcalloc(1, sizeof *v);
    if (c == '"') {
        v->type = J_STR;
        if (!(v->str = parse_string(ps, &v->len))) {
            free(v);
            return NULL;
        }
        return v;
    }
    static const struct { const char *word; jtype type; int b; } words[] = {
        {"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, words[i].word, n)) {
            ps->p += n;
            v->type = words[i].type;
            v->boolean = words[i].b;
            return v;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char tmp[64];
        size_t n = 0;
        while (ps->p + n < ps->end && n < sizeof tmp - 1 && strchr("+-0123456789.eE", ps->p[n]))
            n++;
        memcpy(tmp, ps->p, n);
        tmp[n] = 0;
        char *endp;
        v->num = strtod(tmp, &endp);
        if (endp != tmp + n || !isfinite(v->num)) {
            ps->err = "bad number";
            free(v);
            return NULL;
        }
        ps->p += n;
        v->type = J_NUM;
        return v;
    }
    ps->err = "unexpected character";
    free(v);
    return NULL;
}

jval *json_parse(const char *text, size_t n, const char **err)
{
    parser ps = {text, text + n, NULL};
    jval *v = parse_value(&ps, 0);
    if (v) {
        skip_ws(&ps);
        if (ps.p != ps.end) {
            json_free(v);
            v = NULL;
            ps.err = "trailing characters";
        }
    }
    if (!v && err)
        *err = ps.err ? ps.err : "malformed JSON";
    return v;
}

void json_free(jval *v)
{
    while (v) {
        jval *next = v->next;
        json_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

const jval *json_get(const jval *obj, const char *key)
{
    if (!obj || obj->type != J_OBJ)
        return NULL;
    const jval *found = NULL;
    for (const jval *m = obj->child; m; m = m->next)
        if (!strcmp(m->key, key))
            found = m; /* the last one wins, as in most parsers */
    return found;
}

const char *json_cstr(const jval *obj, const char *key, const char *dflt, int *bad)
{
    const jval *v = json_get(obj, key);
    if (!v || v->type == J_NULL)
        return dflt;
    if (v->type != J_STR || strlen(v->str) != v->len) {
        *bad = 1;
        return NULL;
    }
    return v->str;
}

double json_num(const jval *obj, const char *key, double dflt, int *bad)
{
    const jval *v = json_get(obj, key);
    if (!v || v->type == J_NULL)
        return dflt;
    if (v->type != J_NUM) {
        *bad = 1;
        return dflt;
    }
    return v->num;
}

int json_bool(const jval *obj, const char *key, int dflt, int *bad)
{
    const jval *v = json_get(obj, key);
    if (!v || v->type == J_NULL)
        return dflt;
    if (v->type != J_BOOL) {
        *bad = 1;
        return dflt;
    }
    return v->boolean;
}

/* ---- writer ---------------------------------------------------------------------------- */

void jb_init(jbuf *b)
{
    memset(b, 0, sizeof *b);
}

void jb_free(jbuf *b)
{
    free(b->data);
    jb_init(b);
}

void jb_raw(jbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void open_level(jbuf *b, char c)
{
    jb_raw(b, &c, 1);
    if (b->depth < (int)(sizeof b->first / sizeof b->first[0]) - 1)
        b->depth++;
    b->first[b->depth] = 1;
}

static void close_level(jbuf *b, char c)
{
    jb_raw(b, &c, 1);
    if (b->depth > 0)
        b->depth--;
}

void jb_obj(jbuf *b) { open_level(b, '{'); }
void jb_obj_end(jbuf *b) { close_level(b, '}'); }
void jb_arr(jbuf *b) { open_level(b, '['); }
void jb_arr_end(jbuf *b) { close_level(b, ']'); }

void jb_elem(jbuf *b)
{
    if (!b->first[b->depth])
        jb_raw(b, ",", 1);
    b->first[b->depth] = 0;
}

void jb_key(jbuf *b, const char *key)
{
    jb_elem(b);
    jb_cstr(b, key);
    jb_raw(b, ":", 1);
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not valid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned cp;
    size_t len;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xE0) == 0xC0) { len = 2; cp = p[0] & 0x1F; }
    else if ((p[0] & 0xF0) == 0xE0) { len = 3; cp = p[0] & 0x0F; }
    else if ((p[0] & 0xF8) == 0xF0) { len = 4; cp = p[0] & 0x07; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

void jb_str(jbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char esc[8];
    jb_raw(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\'; esc[1] = (char)c;
            jb_raw(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jb_raw(b, esc, 6);
            i++;
        } else {
            size_t len = utf8_seq(p + i, n - i);
            if (len) {
                jb_raw(b, p + i, len);
                i += len;
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", 0xDC00 + c);
                jb_raw(b, esc, 6);
                i++;
            }
        }
    }
    jb_raw(b, "\"", 1);
}

void jb_cstr(jbuf *b, const char *s)
{
    jb_str(b, s, strlen(s));
}

void jb_int(jbuf *b, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    jb_raw(b, tmp, (size_t)n);
}

void jb_double(jbuf *b, double v)
{
    char tmp[40];
    if (!isfinite(v))
        v = 0;
    int n = snprintf(tmp, sizeof tmp, "%.6f", v);
    jb_raw(b, tmp, (size_t)n);
}

void jb_time(jbuf *b, long long sec, long nsec)
{
    char tmp[48];
    int n;
    if (sec < 0 && nsec > 0) /* -1.5 s is sec=-2, nsec=5e8 */
        n = snprintf(tmp, sizeof tmp, "-%lld.%09ld", -(sec + 1), 1000000000L - nsec);
    else
        n = snprintf(tmp, sizeof tmp, "%lld.%09ld", sec, nsec);
    jb_raw(b, tmp, (size_t)n);
}

void jb_bool(jbuf *b, int v)
{
    if (v) jb_raw(b, "true", 4);
    else jb_raw(b, "false", 5);
}

void jb_null(jbuf *b)
{
    jb_raw(b, "null", 4);
}
