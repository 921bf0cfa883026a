/* index.h: an ordered index of pointers (a skip list), for the store's
 * listings: sessions by name now, and the same structure with another
 * comparator for any later order (best loss, ...).
 *
 * Not thread-safe: the owner guards it (the store, with its table lock:
 * insert and remove under the write lock, seeks and walks under either).
 * The index holds no references: whoever inserts an item removes it
 * before the item goes away. */
#ifndef OPTD_INDEX_H
#define OPTD_INDEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct optd_index optd_index_t;
typedef struct optd_index_node optd_index_node_t;

/* Orders two items (a total order: equal only for the same item's key). */
typedef int (*optd_index_cmp_fn)(const void *a, const void *b);
/* Orders an item against a key (whatever the caller seeks by). */
typedef int (*optd_index_key_fn)(const void *item, const void *key);

/* A new empty index ordered by cmp, or NULL (out of memory).  seed makes
 * the levels reproducible (any value). */
optd_index_t *optd_index_new(optd_index_cmp_fn cmp, uint64_t seed);
/* Frees the index (not the items). */
void optd_index_free(optd_index_t *idx);

/* Adds item: 0, or OPTD_ENOMEM (nothing added).  An item equal to one
 * already in the index is a caller error (the store keeps names unique). */
int optd_index_insert(optd_index_t *idx, void *item);
/* Removes item (found by cmp, and the very pointer): 1 if it was there. */
int optd_index_remove(optd_index_t *idx, const void *item);
/* Puts fresh where old is (they must order alike): 1 if old was there.
 * Allocates nothing, so it cannot fail half way. */
int optd_index_replace(optd_index_t *idx, const void *old, void *fresh);
size_t optd_index_count(const optd_index_t *idx);

/* The first node whose item orders after key (strictly, or at or after it
 * when inclusive), by keycmp; NULL when none.  key NULL: the first node. */
optd_index_node_t *optd_index_seek(const optd_index_t *idx, optd_index_key_fn keycmp,
                                   const void *key, int inclusive);
optd_index_node_t *optd_index_next(const optd_index_node_t *node);
void *optd_index_item(const optd_index_node_t *node);

#endif
