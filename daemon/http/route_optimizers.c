/* route_optimizers.c: GET /v1/optimizers, every optimizer of the core's
 * table with its hyperparameters and their defaults. */
#include "codec.h"
#include "http.h"

void optd_route_optimizers(optd_req_t *req)
{
    json_t *list = json_array();
    json_t *doc = json_object();
    int bad = !list || !doc;
    for (int k = 0; !bad && k < OPTD_OPTIM_COUNT; k++) {
        optd_hparams_t hp;
        optd_hparams_default((optd_optim_kind_t)k, &hp);
        const optd_optim_desc_t *d = optd_optim_desc((optd_optim_kind_t)k);
        json_t *state = json_array();
        for (int b = 0; state && b < OPTD_BUF_COUNT; b++)
            if (d->bufs & (1u << b))
                bad |= json_array_append_new(state, json_string(optd_buf_name((optd_buf_t)b)));
        if (state && d->has_mu_product)
            bad |= json_array_append_new(state, json_string("mu_product"));
        json_t *o = json_object();
        if (o) {
            bad |= json_object_set_new(o, "name", json_string(d->name));
            bad |= json_object_set_new(o, "hyperparameters", optd_codec_hparams_encode(d->kind, &hp));
            bad |= json_object_set_new(o, "state", state);
        } else {
            json_decref(state);
        }
        bad |= json_array_append_new(list, o);
    }
    if (!bad)
        bad |= json_object_set(doc, "optimizers", list);
    if (bad)
        optd_http_error(req, OPTD_ENOMEM, "out of memory listing optimizers");
    else
        optd_http_reply_json(req, 200, doc);
    json_decref(list);
    json_decref(doc);
}
