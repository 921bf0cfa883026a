/* router.c: API.md's paths and methods, and dispatch to the handlers.
 *
 * Paths match exactly (no trailing slash, no extra segments); a path that
 * exists with a method it does not take is 405 with an Allow header. */
#include <stdio.h>
#include <string.h>

#include "http.h"

optd_method_t optd_method_parse(const char *m)
{
    static const struct {
        const char *name;
        optd_method_t m;
    } tab[] = {{"GET", OPTD_M_GET},     {"HEAD", OPTD_M_HEAD},   {"POST", OPTD_M_POST},
               {"PUT", OPTD_M_PUT},     {"PATCH", OPTD_M_PATCH}, {"DELETE", OPTD_M_DELETE}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(m, tab[i].name) == 0)
            return tab[i].m;
    return OPTD_M_OTHER;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

size_t optd_router_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    static const char sessions[] = "/v1/sessions/";
    if (strncmp(s, sessions, sizeof sessions - 1) != 0)
        return MHD_http_unescape(s); /* query keys and values, other paths */
    char *o = s;
    for (const char *p = s; *p;) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0 &&
            hi * 16 + lo != 0 && hi * 16 + lo != '/') {
            *o++ = (char)(hi * 16 + lo);
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return (size_t)(o - s);
}

void optd_router_match(optd_req_t *req)
{
    const char *u = req->url;
    req->route = OPTD_R_NONE;
    if (strcmp(u, "/healthz") == 0) {
        req->route = OPTD_R_HEALTHZ;
        return;
    }
    if (strcmp(u, "/metrics") == 0) {
        req->route = OPTD_R_METRICS;
        return;
    }
    if (req->srv->cfg.ui && strcmp(u, "/") == 0) {
        req->route = OPTD_R_ROOT;
        return;
    }
    if (req->srv->cfg.ui && strncmp(u, "/ui", 3) == 0 && (u[3] == '\0' || u[3] == '/')) {
        req->route = OPTD_R_UI;
        return;
    }
    if (strcmp(u, "/v1/optimizers") == 0) {
        req->route = OPTD_R_OPTIMIZERS;
        return;
    }
    if (strcmp(u, "/v1/sessions") == 0) {
        req->route = OPTD_R_SESSIONS;
        return;
    }
    if (strcmp(u, "/v1/steps") == 0) {
        req->route = OPTD_R_STEPS;
        return;
    }
    static const char prefix[] = "/v1/sessions/";
    if (strncmp(u, prefix, sizeof prefix - 1) != 0)
        return;
    const char *name = u + sizeof prefix - 1;
    const char *slash = strchr(name, '/');
    size_t len = slash ? (size_t)(slash - name) : strlen(name);
    if (len == 0)
        return;
    const char *rest = slash ? slash + 1 : NULL;
    optd_route_t r;
    if (!rest)
        r = OPTD_R_SESSION;
    else if (strcmp(rest, "params") == 0)
        r = OPTD_R_PARAMS;
    else if (strcmp(rest, "step") == 0)
        r = OPTD_R_STEP;
    else if (strcmp(rest, "history") == 0)
        r = OPTD_R_HISTORY;
    else if (strcmp(rest, "state") == 0)
        r = OPTD_R_STATE;
    else
        return;
    req->route = r;
    if (len > OPTD_NAME_MAX) {
        req->name_too_long = true;
        len = OPTD_NAME_MAX;
    }
    memcpy(req->name, name, len);
    req->name[len] = '\0';
}

unsigned optd_router_allowed(optd_route_t route)
{
    switch (route) {
    case OPTD_R_HEALTHZ:
    case OPTD_R_METRICS:
    case OPTD_R_OPTIMIZERS:
    case OPTD_R_HISTORY:
    case OPTD_R_ROOT:
    case OPTD_R_UI:
        return OPTD_M_GET | OPTD_M_HEAD;
    case OPTD_R_PARAMS:
        return OPTD_M_GET | OPTD_M_HEAD | OPTD_M_PUT;
    case OPTD_R_SESSIONS:
        return OPTD_M_GET | OPTD_M_HEAD | OPTD_M_POST;
    case OPTD_R_SESSION:
        return OPTD_M_GET | OPTD_M_HEAD | OPTD_M_PUT | OPTD_M_PATCH | OPTD_M_DELETE;
    case OPTD_R_STEP:
    case OPTD_R_STEPS:
        return OPTD_M_POST;
    case OPTD_R_STATE:
        return OPTD_M_GET | OPTD_M_HEAD | OPTD_M_PUT;
    case OPTD_R_NONE:
        break;
    }
    return 0;
}

void optd_router_allow_header(unsigned mask, char *buf, size_t cap)
{
    static const struct {
        optd_method_t m;
        const char *name;
    } tab[] = {{OPTD_M_GET, "GET"},     {OPTD_M_HEAD, "HEAD"},   {OPTD_M_POST, "POST"},
               {OPTD_M_PUT, "PUT"},     {OPTD_M_PATCH, "PATCH"}, {OPTD_M_DELETE, "DELETE"}};
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof tab / sizeof tab[0] && n < cap; i++)
        if (mask & tab[i].m)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", tab[i].name);
}

void optd_router_dispatch(optd_req_t *req)
{
    /* HEAD runs the GET handler; libmicrohttpd drops the body. */
    optd_method_t m = req->method == OPTD_M_HEAD ? OPTD_M_GET : req->method;
    switch (req->route) {
    case OPTD_R_HEALTHZ:
        optd_route_healthz(req);
        return;
    case OPTD_R_METRICS:
        optd_route_metrics(req);
        return;
    case OPTD_R_OPTIMIZERS:
        optd_route_optimizers(req);
        return;
    case OPTD_R_SESSIONS:
        if (m == OPTD_M_GET)
            optd_route_sessions_list(req);
        else
            optd_route_sessions_create(req);
        return;
    case OPTD_R_SESSION:
        if (m == OPTD_M_GET)
            optd_route_session_get(req);
        else if (m == OPTD_M_PUT)
            optd_route_sessions_create(req);
        else if (m == OPTD_M_PATCH)
            optd_route_session_patch(req);
        else
            optd_route_session_delete(req);
        return;
    case OPTD_R_PARAMS:
        if (m == OPTD_M_GET)
            optd_route_params_get(req);
        else
            optd_route_params_put(req);
        return;
    case OPTD_R_STEP:
        optd_route_step(req);
        return;
    case OPTD_R_HISTORY:
        optd_route_history_get(req);
        return;
    case OPTD_R_STEPS:
        optd_route_steps(req);
        return;
    case OPTD_R_STATE:
        if (m == OPTD_M_GET)
            optd_route_state_get(req);
        else
            optd_route_state_put(req);
        return;
    case OPTD_R_ROOT:
        optd_route_root(req);
        return;
    case OPTD_R_UI:
        optd_route_ui(req);
        return;
    case OPTD_R_NONE:
        break;
    }
    optd_http_error(req, OPTD_ENOTFOUND, "no route for %s %s", req->method_str, req->url);
}
