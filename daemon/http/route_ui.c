/* route_ui.c: the page for people, GET /ui/ (API.md 1.1 "The page").
 *
 * The page's own files are built into the binary (ui_assets.h); its chart
 * library is the one file read from disk, once, at start (Debian's
 * libjs-chart.js, or --ui-assets DIR), and served from memory.  A request
 * never touches the file system: the file part of the path must equal one
 * of the names in the table, so "../" or "%2e%2e" can only be a 404.  The
 * files hold no data (the page reads everything through /v1 with the
 * client's token), so they need no token themselves. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "fileio.h"
#include "http.h"
#include "ui_assets.h"

#define UI_LIB_DIR "/usr/share/javascript/chart.js"
#define UI_LIB_PATH "chart.js" /* what the page loads: /ui/chart.js */

/* The names Chart.js's browser (UMD) build has: 4.x, then 3.x. */
static const char *const lib_names[] = {"chart.umd.js", "chart.min.js"};

/* What /ui/chart.js answers when no library was found: the page sees no
 * Chart and shows its tables without the chart (and the browser logs no
 * failed load). */
static const char lib_missing[] =
    "/* optd found no Chart.js when it started (see its log): the page works without charts. */\n";

bool optd_ui_path(const char *url)
{
    return strcmp(url, "/") == 0 || (strncmp(url, "/ui", 3) == 0 && (url[3] == '\0' || url[3] == '/'));
}

int optd_ui_load(optd_server_t *srv)
{
    if (!srv->cfg.ui)
        return 0;
    const char *dir = srv->cfg.ui_assets ? srv->cfg.ui_assets : UI_LIB_DIR;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dfd < 0 ? -errno : -ENOENT;
    for (size_t i = 0; dfd >= 0 && i < sizeof lib_names / sizeof lib_names[0]; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = optd_file_read_all(dfd, lib_names[i], &buf, &len);
        if (rc == 0 && len > 0) {
            srv->ui_lib = (char *)buf;
            srv->ui_lib_len = len;
            uLong crc = crc32(0L, Z_NULL, 0);
            for (size_t off = 0; off < len; off += 1u << 30) /* crc32 takes uInt lengths */
                crc = crc32(crc, buf + off, (uInt)(len - off < (1u << 30) ? len - off : (1u << 30)));
            snprintf(srv->ui_lib_etag, sizeof srv->ui_lib_etag, "\"%lu-%zu\"", (unsigned long)crc, len);
            optd_log(&srv->log, OPTD_LOG_INFO, "ui: serving /ui/ with the chart library %s/%s", dir,
                     lib_names[i]);
            close(dfd);
            return 0;
        }
        free(buf);
    }
    if (dfd >= 0)
        close(dfd);
    optd_log(&srv->log, OPTD_LOG_WARN,
             "ui: no Chart.js (chart.umd.js or chart.min.js) in %s (%s): the page /ui/ works without "
             "charts; install libjs-chart.js or give --ui-assets DIR",
             dir, strerror(-rc));
    return 0;
}

void optd_ui_free(optd_server_t *srv)
{
    free(srv->ui_lib);
    srv->ui_lib = NULL;
    srv->ui_lib_len = 0;
}

void optd_ui_headers(optd_req_t *req)
{
    optd_http_header(req, "Content-Security-Policy",
                     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                     "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                     "frame-ancestors 'none'");
    optd_http_header(req, "X-Content-Type-Options", "nosniff");
    optd_http_header(req, "X-Frame-Options", "DENY");
    optd_http_header(req, "Referrer-Policy", "no-referrer");
}

static const char *content_type(const char *name)
{
    static const struct {
        const char *ext;
        const char *type;
    } tab[] = {{".html", "text/html; charset=utf-8"},
               {".js", "text/javascript; charset=utf-8"},
               {".css", "text/css; charset=utf-8"},
               {".svg", "image/svg+xml"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(dot, tab[i].ext) == 0)
            return tab[i].type;
    return "application/octet-stream";
}

/* A redirect bigger than this drops its query rather than grow without
 * bound (a deep link of a few dozen sessions is well under it). */
#define REDIRECT_MAX 2048

/* Appends "key=value" of one query argument, percent-encoded again (MHD
 * handed it over decoded), for the redirect's Location. */
static enum MHD_Result put_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    optd_sbuf_t *b = cls;
    static const char hex[] = "0123456789ABCDEF";
    const char *parts[2] = {key, value};
    if (b->failed)
        return MHD_NO;
    optd_sbuf_puts(b, b->len == sizeof "/ui/" - 1 ? "?" : "&");
    for (int i = 0; i < 2 && parts[i]; i++) {
        if (i)
            optd_sbuf_puts(b, "=");
        for (const unsigned char *c = (const unsigned char *)parts[i]; *c; c++) {
            if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                *c == '-' || *c == '.' || *c == '_' || *c == '~') {
                optd_sbuf_put(b, (const char *)c, 1);
            } else {
                char pct[3] = {'%', hex[*c >> 4], hex[*c & 15]};
                optd_sbuf_put(b, pct, 3);
            }
        }
    }
    return b->len > REDIRECT_MAX ? MHD_NO : MHD_YES;
}

/* 302 to /ui/ with the request's query kept, so "/?session=a" is a deep
 * link too. */
static void redirect(optd_req_t *req)
{
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_puts(&b, "/ui/");
    if (!b.failed)
        MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, put_arg, &b);
    optd_http_reply_empty(req, 302);
    optd_http_header(req, MHD_HTTP_HEADER_LOCATION, b.failed || b.len > REDIRECT_MAX ? "/ui/" : b.p);
    optd_sbuf_free(&b);
}

/* Answers a file held in memory for the life of the process: 304 when the
 * client's copy is current, else the bytes.  no-cache: a browser asks
 * again each time (and gets a 304), so a new daemon's page shows at once. */
static void reply_file(optd_req_t *req, const char *name, const void *data, size_t len, const char *etag)
{
    const char *inm = optd_req_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && strcmp(inm, etag) == 0)
        optd_http_reply_empty(req, 304);
    else
        optd_http_reply_static(req, 200, content_type(name), data, len);
    optd_http_header(req, MHD_HTTP_HEADER_ETAG, etag);
    optd_http_header(req, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
}

void optd_route_root(optd_req_t *req)
{
    redirect(req);
}

void optd_route_ui(optd_req_t *req)
{
    const char *url = req->url;
    if (strcmp(url, "/ui") == 0) {
        redirect(req);
        return;
    }
    const char *name = url + 4; /* after "/ui/" */
    if (*name == '\0')
        name = "index.html";
    if (strcmp(name, UI_LIB_PATH) == 0) {
        if (req->srv->ui_lib)
            reply_file(req, name, req->srv->ui_lib, req->srv->ui_lib_len, req->srv->ui_lib_etag);
        else
            reply_file(req, name, lib_missing, sizeof lib_missing - 1, "\"none\"");
        return;
    }
    for (size_t i = 0; i < optd_ui_n_assets; i++) {
        const optd_ui_asset_t *a = &optd_ui_assets[i];
        if (strcmp(name, a->name) == 0) {
            reply_file(req, name, a->data, a->len, a->etag);
            return;
        }
    }
    optd_http_error(req, OPTD_ENOTFOUND, "no file %.100s under /ui/", url);
}
