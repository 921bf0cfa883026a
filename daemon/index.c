/* index.c: the skip list behind index.h.
 *
 * Chosen over a balanced tree for its size (no rotations, one pointer
 * array per node) and over a sorted array because inserts and removes
 * stay O(log n) at 100k names.  Levels are drawn with p = 1/4 from a
 * xorshift generator kept in the index (no global state). */
#include "index.h"

#include <stdlib.h>

#include "optd/error.h"

#define MAX_LEVEL 24 /* 4^24 items before the top level runs out */

struct optd_index_node {
    void *item;
    int level;
    optd_index_node_t *next[]; /* level pointers */
};

struct optd_index {
    optd_index_cmp_fn cmp;
    uint64_t rng;
    int level; /* levels in use, >= 1 */
    size_t count;
    optd_index_node_t head; /* head.next[] follows: MAX_LEVEL pointers */
};

optd_index_t *optd_index_new(optd_index_cmp_fn cmp, uint64_t seed)
{
    optd_index_t *idx = calloc(1, sizeof *idx + MAX_LEVEL * sizeof(optd_index_node_t *));
    if (!idx)
        return NULL;
    idx->cmp = cmp;
    idx->rng = seed ? seed : 0x9e3779b97f4a7c15u;
    idx->level = 1;
    idx->head.level = MAX_LEVEL;
    return idx;
}

void optd_index_free(optd_index_t *idx)
{
    if (!idx)
        return;
    optd_index_node_t *n = idx->head.next[0];
    while (n) {
        optd_index_node_t *next = n->next[0];
        free(n);
        n = next;
    }
    free(idx);
}

static int random_level(optd_index_t *idx)
{
    uint64_t x = idx->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    idx->rng = x;
    int level = 1;
    while (level < MAX_LEVEL && (x & 3) == 0) {
        level++;
        x >>= 2;
    }
    return level;
}

/* update[i]: the last node on level i ordering before item. */
static void find_preds(optd_index_t *idx, const void *item, optd_index_node_t **update)
{
    optd_index_node_t *x = &idx->head;
    for (int i = idx->level - 1; i >= 0; i--) {
        while (x->next[i] && idx->cmp(x->next[i]->item, item) < 0)
            x = x->next[i];
        update[i] = x;
    }
}

int optd_index_insert(optd_index_t *idx, void *item)
{
    optd_index_node_t *update[MAX_LEVEL];
    find_preds(idx, item, update);
    int level = random_level(idx);
    optd_index_node_t *n = malloc(sizeof *n + (size_t)level * sizeof n->next[0]);
    if (!n)
        return OPTD_ENOMEM;
    n->item = item;
    n->level = level;
    for (int i = idx->level; i < level; i++)
        update[i] = &idx->head;
    if (level > idx->level)
        idx->level = level;
    for (int i = 0; i < level; i++) {
        n->next[i] = update[i]->next[i];
        update[i]->next[i] = n;
    }
    idx->count++;
    return 0;
}

int optd_index_remove(optd_index_t *idx, const void *item)
{
    optd_index_node_t *update[MAX_LEVEL];
    find_preds(idx, item, update);
    optd_index_node_t *n = update[0]->next[0];
    if (!n || n->item != item)
        return 0;
    for (int i = 0; i < n->level; i++)
        update[i]->next[i] = n->next[i];
    while (idx->level > 1 && !idx->head.next[idx->level - 1])
        idx->level--;
    free(n);
    idx->count--;
    return 1;
}

int optd_index_replace(optd_index_t *idx, const void *old, void *fresh)
{
    optd_index_node_t *update[MAX_LEVEL];
    find_preds(idx, old, update);
    optd_index_node_t *n = update[0]->next[0];
    if (!n || n->item != old)
        return 0;
    n->item = fresh;
    return 1;
}

size_t optd_index_count(const optd_index_t *idx)
{
    return idx->count;
}

optd_index_node_t *optd_index_seek(const optd_index_t *idx, optd_index_key_fn keycmp,
                                   const void *key, int inclusive)
{
    if (!key)
        return idx->head.next[0];
    const optd_index_node_t *x = &idx->head;
    for (int i = idx->level - 1; i >= 0; i--) {
        while (x->next[i]) {
            int c = keycmp(x->next[i]->item, key);
            if (c > 0 || (inclusive && c == 0))
                break;
            x = x->next[i];
        }
    }
    return x->next[0];
}

optd_index_node_t *optd_index_next(const optd_index_node_t *node)
{
    return node->next[0];
}

void *optd_index_item(const optd_index_node_t *node)
{
    return node->item;
}
