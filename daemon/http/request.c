/* request.c: helpers the handlers share for reading a request (its document,
 * query arguments, headers, the session the URL names). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int optd_req_doc(optd_req_t *req, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    if (req->body_kind == OPTD_BODY_BINARY) {
        memset(doc, 0, sizeof *doc);
        return optd_err_set(err, OPTD_EINVAL, "this route takes a JSON body, not application/octet-stream");
    }
    return optd_doc_read(req->body ? req->body : "", req->body_len, spec, doc, err);
}

const char *optd_req_query(optd_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *optd_req_header(optd_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, key);
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
