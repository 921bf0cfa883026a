/* test_index.c: the skip list behind the store's name order, against a
 * sorted array as the oracle: inserts and removes in random order, seeks
 * (strict and inclusive) from every kind of key, and walks. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "optd/error.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int cmp_key(const void *item, const void *key)
{
    return strcmp(item, key);
}

static int cmp_sort(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(empty)
{
    optd_index_t *idx = optd_index_new(cmp_str, 1);
    ck_assert_ptr_nonnull(idx);
    ck_assert_ptr_null(optd_index_seek(idx, cmp_key, NULL, 1));
    ck_assert_ptr_null(optd_index_seek(idx, cmp_key, "a", 0));
    ck_assert_int_eq(optd_index_remove(idx, "a"), 0);
    ck_assert_uint_eq(optd_index_count(idx), 0);
    optd_index_free(idx);
}
END_TEST

/* The first of sorted[0..n) after key (or at it when inclusive): its index or n. */
static size_t oracle_seek(char **sorted, size_t n, const char *key, int inclusive)
{
    size_t i = 0;
    while (i < n && (inclusive ? strcmp(sorted[i], key) < 0 : strcmp(sorted[i], key) <= 0))
        i++;
    return i;
}

START_TEST(random_against_sorted_array)
{
    enum { N = 3000 };
    static char names[N][16];
    char *in[N];
    size_t n_in = 0;
    unsigned seed = 7;
    optd_index_t *idx = optd_index_new(cmp_str, 42);
    for (size_t i = 0; i < N; i++)
        snprintf(names[i], sizeof names[i], "s%05u", (unsigned)(rand_r(&seed) % 100000));
    for (int round = 0; round < 4; round++) {
        /* insert the ones not in yet (skipping duplicate names), remove a third */
        for (size_t i = 0; i < N; i++) {
            bool dup = false;
            for (size_t j = 0; j < n_in && !dup; j++)
                dup = strcmp(in[j], names[i]) == 0;
            if (dup)
                continue;
            ck_assert_int_eq(optd_index_insert(idx, names[i]), 0);
            in[n_in++] = names[i];
        }
        for (size_t j = 0; j < n_in;) {
            if (rand_r(&seed) % 3 == 0) {
                ck_assert_int_eq(optd_index_remove(idx, in[j]), 1);
                ck_assert_int_eq(optd_index_remove(idx, in[j]), 0);
                in[j] = in[--n_in];
            } else {
                j++;
            }
        }
        ck_assert_uint_eq(optd_index_count(idx), n_in);
        char *sorted[N];
        memcpy(sorted, in, n_in * sizeof *sorted);
        qsort(sorted, n_in, sizeof *sorted, cmp_sort);
        /* a full walk is the sorted order */
        size_t k = 0;
        for (optd_index_node_t *x = optd_index_seek(idx, cmp_key, NULL, 1); x; x = optd_index_next(x))
            ck_assert_str_eq(optd_index_item(x), sorted[k++]);
        ck_assert_uint_eq(k, n_in);
        /* seeks from present names, absent names, before the first, after the last */
        const char *keys[] = {"", "s", "s0", "s5", "s99999", "t", sorted[0], sorted[n_in / 2],
                              sorted[n_in - 1]};
        for (size_t q = 0; q < sizeof keys / sizeof keys[0]; q++) {
            for (int inc = 0; inc < 2; inc++) {
                size_t want = oracle_seek(sorted, n_in, keys[q], inc);
                optd_index_node_t *x = optd_index_seek(idx, cmp_key, keys[q], inc);
                if (want == n_in) {
                    ck_assert_ptr_null(x);
                } else {
                    ck_assert_ptr_nonnull(x);
                    ck_assert_str_eq(optd_index_item(x), sorted[want]);
                }
            }
        }
    }
    optd_index_free(idx);
}
END_TEST

START_TEST(replace_in_place)
{
    char a[] = "a", b[] = "b", b2[] = "b", c[] = "c";
    optd_index_t *idx = optd_index_new(cmp_str, 3);
    ck_assert_int_eq(optd_index_insert(idx, c), 0);
    ck_assert_int_eq(optd_index_insert(idx, a), 0);
    ck_assert_int_eq(optd_index_insert(idx, b), 0);
    ck_assert_int_eq(optd_index_replace(idx, b2, b), 0); /* b2 is not in it */
    ck_assert_int_eq(optd_index_replace(idx, b, b2), 1);
    optd_index_node_t *x = optd_index_seek(idx, cmp_key, "a", 0);
    ck_assert_ptr_eq(optd_index_item(x), b2);
    ck_assert_ptr_eq(optd_index_item(optd_index_next(x)), c);
    ck_assert_int_eq(optd_index_remove(idx, b), 0);
    ck_assert_int_eq(optd_index_remove(idx, b2), 1);
    ck_assert_uint_eq(optd_index_count(idx), 2);
    optd_index_free(idx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("index");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, empty);
    tcase_add_test(tc, random_against_sorted_array);
    tcase_add_test(tc, replace_in_place);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
