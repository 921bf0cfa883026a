/* auth.c: bearer tokens from --auth-token-file, compared in constant time.
 *
 * The file holds one token per line; blank lines and surrounding whitespace
 * are ignored.  Tokens are kept in the server struct, wiped on free, and
 * never logged. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

/* Zeroes memory the compiler may not optimize away. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

void optd_auth_free(optd_server_t *srv)
{
    for (size_t i = 0; i < srv->n_tokens; i++) {
        wipe(srv->tokens[i], strlen(srv->tokens[i]));
        free(srv->tokens[i]);
    }
    free(srv->tokens);
    srv->tokens = NULL;
    srv->n_tokens = 0;
}

int optd_auth_load(optd_server_t *srv, const char *path, optd_err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return optd_err_set(err, OPTD_EINVAL, "cannot read --auth-token-file %s: %s", path,
                            strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        char *s = line, *e = line + n;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (e == s)
            continue;
        char *tok = strndup(s, (size_t)(e - s));
        char **grown = tok ? realloc(srv->tokens, (srv->n_tokens + 1) * sizeof *grown) : NULL;
        if (!grown) {
            free(tok);
            rc = optd_err_set(err, OPTD_ENOMEM, "out of memory reading --auth-token-file");
            break;
        }
        srv->tokens = grown;
        srv->tokens[srv->n_tokens++] = tok;
    }
    if (line) {
        wipe(line, cap);
        free(line);
    }
    if (!rc && ferror(f))
        rc = optd_err_set(err, OPTD_EINVAL, "cannot read --auth-token-file %s: %s", path, strerror(errno));
    fclose(f);
    if (!rc && srv->n_tokens == 0)
        rc = optd_err_set(err, OPTD_EINVAL,
                          "--auth-token-file %s holds no token (one per line); refusing to serve an open API",
                          path);
    if (rc)
        optd_auth_free(srv);
    return rc;
}

/* 1 when a (alen bytes) equals token, in time that depends only on the
 * token's length, never on where the bytes differ. */
static unsigned token_equal(const char *a, size_t alen, const char *token)
{
    size_t tlen = strlen(token);
    unsigned diff = alen != tlen;
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)token[i] ^ (unsigned char)(i < alen ? a[i] : 0);
    return diff == 0;
}

bool optd_auth_check(optd_server_t *srv, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0)
        return false;
    /* Compare against every token, without stopping at a match. */
    unsigned ok = 0;
    for (size_t i = 0; i < srv->n_tokens; i++)
        ok |= token_equal(tok, len, srv->tokens[i]);
    return ok != 0;
}
