/* ui_assets.h: the page's own files (daemon/ui/), built into the binary.
 *
 * The table is generated at build time by daemon/ui/embed.sh into
 * $(BUILD)/gen/ui_assets.c, so the binary alone serves the page; the page's
 * chart library is the one file read from disk (route_ui.c). */
#ifndef OPTD_UI_ASSETS_H
#define OPTD_UI_ASSETS_H

#include <stddef.h>

typedef struct optd_ui_asset {
    const char *name;           /* "index.html": the path under /ui/ */
    const unsigned char *data;
    size_t len;
    const char *etag;           /* "\"crc-size\"", from the file's contents */
} optd_ui_asset_t;

extern const optd_ui_asset_t optd_ui_assets[];
extern const size_t optd_ui_n_assets;

#endif
