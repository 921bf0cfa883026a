/* request.c: helpers the handlers share for reading a request (JSON body,
 * query arguments, headers, the session the URL names). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "numarray.h"

json_t *optd_req_json_object(optd_req_t *req)
{
    if (req->body_kind == OPTD_BODY_BINARY) {
        optd_http_error(req, OPTD_EINVAL, "this route takes a JSON body, not application/octet-stream");
        return NULL;
    }
    return optd_req_json_object_of(req, req->body ? req->body : "", req->body_len);
}

/* The key Jansson found twice, into out (cap bytes): its token ends just
 * before jerr->position, so the opening quote is the nearest one before
 * that is not escaped (a JSON string holds no other).  false if it cannot
 * be read back. */
static bool duplicate_key(const char *buf, size_t len, const json_error_t *jerr, char *out, size_t cap)
{
    size_t end = (size_t)jerr->position;
    if (end < 2 || end > len || buf[end - 1] != '"')
        return false;
    for (size_t q = end - 1; q-- > 0;) {
        if (buf[q] != '"')
            continue;
        size_t bs = 0;
        while (q > bs && buf[q - 1 - bs] == '\\')
            bs++;
        if (bs % 2)
            continue;
        json_t *k = json_loadb(buf + q, end - q, JSON_DECODE_ANY, NULL);
        bool ok = json_is_string(k);
        if (ok)
            snprintf(out, cap, "%s", json_string_value(k));
        json_decref(k);
        return ok;
    }
    return false;
}

json_t *optd_req_json_object_of(optd_req_t *req, const char *buf, size_t len)
{
    size_t outside, bad;
    if (len > OPTD_JSON_OUTSIDE_MAX && (outside = optd_numarray_outside_bytes(buf, len)) > OPTD_JSON_OUTSIDE_MAX) {
        /* Refused unread; but a malformed body is still invalid JSON (a
         * broken number array counts as "outside" too), found in one pass
         * that builds nothing. */
        if (!optd_json_valid(buf, len, &bad))
            optd_http_error(req, OPTD_EJSON, "the body is not valid JSON (at byte %zu)", bad);
        else
            optd_http_error(req, OPTD_EINVAL,
                            "the body holds %zu bytes besides its arrays of numbers; at most %zu are "
                            "read (names, hyperparameters, schedules and 32 labels take a few KB)",
                            outside, OPTD_JSON_OUTSIDE_MAX);
        return NULL;
    }
    json_error_t jerr;
    /* API.md 1.1: a key twice in one object, at any depth, is refused, not
     * guessed at (a proxy or validator in front may read the other one). */
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc && json_error_code(&jerr) == json_error_duplicate_key) {
        char key[80];
        if (!duplicate_key(buf, len, &jerr, key, sizeof key))
            snprintf(key, sizeof key, "?");
        optd_http_error(req, OPTD_EJSON,
                        "the key \"%.64s\" appears twice in one object (line %d, column %d); "
                        "every key may appear once",
                        key, jerr.line, jerr.column);
        return NULL;
    }
    if (!doc && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* 1e400 is valid JSON text but not a finite double: API.md's
         * Validation refuses non-finite numbers as invalid_argument. */
        optd_http_error(req, OPTD_EINVAL, "a number is out of range (not a finite double): %s (line %d, column %d)",
                        jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!doc) {
        optd_http_error(req, OPTD_EJSON, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                        jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        optd_http_error(req, OPTD_EJSON, "the body must be a JSON object");
        return NULL;
    }
    return doc;
}

const char *optd_req_query(optd_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *optd_req_header(optd_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, key);
}

bool optd_req_known_fields(optd_req_t *req, const json_t *obj, const char *const *allowed,
                           const char *what)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(key, *a) == 0) {
                ok = true;
                break;
            }
        if (!ok) {
            char list[300];
            size_t n = 0;
            list[0] = '\0';
            for (const char *const *a = allowed; *a && n < sizeof list; a++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *a);
            optd_http_error(req, OPTD_EINVAL, "unknown field '%.64s' in %s (known: %s)", key, what, list);
            return false;
        }
    }
    return true;
}

optd_session_t *optd_req_session(optd_req_t *req)
{
    if (req->name_too_long || !optd_session_name_valid(req->name)) {
        optd_http_error(req, OPTD_EINVAL,
                        "invalid session name: names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        return NULL;
    }
    optd_session_t *s = optd_store_get(req->srv->store, req->name);
    if (!s) {
        optd_http_error(req, OPTD_ENOTFOUND, "no session named '%s'", req->name);
        return NULL;
    }
    optd_session_touch(s);
    return s;
}

bool optd_req_query_u64(optd_req_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t def,
                        uint64_t *out)
{
    const char *v = optd_req_query(req, key);
    if (!v) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    unsigned long long u = (*v >= '0' && *v <= '9') ? strtoull(v, &end, 10) : 0;
    if (!(*v >= '0' && *v <= '9') || errno || *end || u < lo || u > hi) {
        optd_http_error(req, OPTD_EINVAL, "query '%s' must be an integer in %llu..%llu", key,
                        (unsigned long long)lo, (unsigned long long)hi);
        return false;
    }
    *out = u;
    return true;
}
