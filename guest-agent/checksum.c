/* The file transfers' checksum (get and put): which algorithm a request asked for, and
 * one streaming interface over CRC-32 and SHA-256.
 *
 * The checksum guards the transfer (relays, framing, truncation), so the client picks:
 * "crc32" (what fc-macos asks for: cheap everywhere) or "sha256" (the default when a
 * request names none, as before the choice existed). FILE_END carries it under the
 * algorithm's name: {"crc32": "8 hex digits"} or {"sha256": "64 hex digits"}.
 */
#include <stdio.h>
#include <string.h>

#include "agent.h"

static const char *const NAMES[] = {[CK_CRC32] = "crc32", [CK_SHA256] = "sha256"};

const char *checksum_name(checksum_alg alg)
{
    return NAMES[alg];
}

int checksum_from_request(int fd, const jval *req, checksum_alg *alg)
{
    int bad = 0;
    const char *name = json_cstr(req, "checksum", "sha256", &bad);
    for (size_t i = 0; !bad && i < sizeof NAMES / sizeof NAMES[0]; i++)
        if (!strcmp(name, NAMES[i])) {
            *alg = (checksum_alg)i;
            return 0;
        }
    send_error(fd, F_RES, "bad_request", "\"checksum\" must be \"crc32\" or \"sha256\" (absent: sha256)");
    return -1;
}

void checksum_list(jbuf *b)
{
    jb_arr(b);
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        jb_elem(b);
        jb_cstr(b, NAMES[i]);
    }
    jb_arr_end(b);
}

void checksum_init(checksum_ctx *c, checksum_alg alg)
{
    c->alg = alg;
    c->crc = 0;
    if (alg == CK_SHA256)
        sha256_init(&c->sha);
}

void checksum_update(checksum_ctx *c, const void *data, size_t n)
{
    if (c->alg == CK_CRC32)
        c->crc = crc32_update(c->crc, data, n);
    else
        sha256_update(&c->sha, data, n);
}

void checksum_final_hex(checksum_ctx *c, char out[65])
{
    if (c->alg == CK_CRC32)
        snprintf(out, 65, "%08x", (unsigned)c->crc);
    else
        sha256_final_hex(&c->sha, out);
}
