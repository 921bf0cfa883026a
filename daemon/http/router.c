/* router.c: API.md's paths and methods, and dispatch to the handlers.
 *
 * Paths match exactly (no trailing slash, no extra segments); a path that
 * exists with a method it does not take is 405 with an Allow header, and a
 * binary body where the route takes none is 415 (server.c asks the table). */
#include <stdbool.h>
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

/* Every route: its path, the handler of each method, and whether its
 * bodies may be binary.  Allow, 405 and 415 follow from this table; a new
 * endpoint is one row here and its handler.  HEAD runs the GET handler
 * (libmicrohttpd drops the body). */
typedef void (*handler_fn)(optd_req_t *req);

struct optd_route_def {
    optd_route_t route;
    const char *path;      /* exact path; under a session: what follows "{name}" */
    bool under_session;    /* /v1/sessions/{name}<path> */
    bool ui_only;          /* served only with --ui on */
    bool ui_prefix;        /* path and path/... */
    bool binary;           /* takes application/octet-stream bodies too */
    handler_fn get, post, put, patch, del;
};

static const optd_route_def_t routes[] = {
    {OPTD_R_HEALTHZ, "/healthz", .get = optd_route_healthz},
    {OPTD_R_METRICS, "/metrics", .get = optd_route_metrics},
    {OPTD_R_ROOT, "/", .ui_only = true, .get = optd_route_root},
    {OPTD_R_UI, "/ui", .ui_only = true, .ui_prefix = true, .get = optd_route_ui},
    {OPTD_R_OPTIMIZERS, "/v1/optimizers", .get = optd_route_optimizers},
    {OPTD_R_SESSIONS, "/v1/sessions", .get = optd_route_sessions_list, .post = optd_route_sessions_create},
    {OPTD_R_STEPS, "/v1/steps", .post = optd_route_steps},
    {OPTD_R_SESSION, "", .under_session = true, .get = optd_route_session_get, .put = optd_route_sessions_create,
     .patch = optd_route_session_patch, .del = optd_route_session_delete},
    {OPTD_R_PARAMS, "/params", .under_session = true, .binary = true, .get = optd_route_params_get,
     .put = optd_route_params_put},
    {OPTD_R_STEP, "/step", .under_session = true, .binary = true, .post = optd_route_step},
    {OPTD_R_HISTORY, "/history", .under_session = true, .get = optd_route_history_get},
    {OPTD_R_STATE, "/state", .under_session = true, .get = optd_route_state_get, .put = optd_route_state_put},
    {OPTD_R_ROWS, "/rows", .under_session = true, .post = optd_route_rows_post},
};

static const char session_prefix[] = "/v1/sessions/";

static bool matches(const optd_route_def_t *r, const char *u, bool ui_on)
{
    if (r->ui_only && !ui_on)
        return false;
    if (r->ui_prefix) {
        size_t n = strlen(r->path);
        return strncmp(u, r->path, n) == 0 && (u[n] == '\0' || u[n] == '/');
    }
    return strcmp(u, r->path) == 0;
}

void optd_router_match(optd_req_t *req)
{
    const char *u = req->url;
    req->route = OPTD_R_NONE;
    req->def = NULL;
    bool ui_on = req->srv->cfg.ui;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!routes[i].under_session && matches(&routes[i], u, ui_on)) {
            req->def = &routes[i];
            req->route = routes[i].route;
            return;
        }
    }
    if (strncmp(u, session_prefix, sizeof session_prefix - 1) != 0)
        return;
    const char *name = u + sizeof session_prefix - 1;
    size_t len = strcspn(name, "/");
    if (len == 0)
        return;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].under_session && strcmp(name + len, routes[i].path) == 0) {
            req->def = &routes[i];
            req->route = routes[i].route;
            break;
        }
    }
    if (!req->def)
        return;
    if (len > OPTD_NAME_MAX) {
        req->name_too_long = true;
        len = OPTD_NAME_MAX;
    }
    memcpy(req->name, name, len);
    req->name[len] = '\0';
}

unsigned optd_router_allowed(const optd_route_def_t *def)
{
    if (!def)
        return 0;
    return (def->get ? OPTD_M_GET | OPTD_M_HEAD : 0u) | (def->post ? OPTD_M_POST : 0u) |
           (def->put ? OPTD_M_PUT : 0u) | (def->patch ? OPTD_M_PATCH : 0u) | (def->del ? OPTD_M_DELETE : 0u);
}

bool optd_router_takes_binary(const optd_route_def_t *def)
{
    return def && def->binary;
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
    const optd_route_def_t *d = req->def;
    handler_fn h = NULL;
    if (d) {
        switch (req->method) {
        case OPTD_M_GET:
        case OPTD_M_HEAD:
            h = d->get;
            break;
        case OPTD_M_POST:
            h = d->post;
            break;
        case OPTD_M_PUT:
            h = d->put;
            break;
        case OPTD_M_PATCH:
            h = d->patch;
            break;
        case OPTD_M_DELETE:
            h = d->del;
            break;
        case OPTD_M_OTHER:
            break;
        }
    }
    if (h) {
        h(req);
        return;
    }
    optd_http_error(req, OPTD_ENOTFOUND, "no route for %s %s", req->method_str, req->url);
}
