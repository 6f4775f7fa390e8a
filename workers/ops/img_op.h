/* The "image" op's descriptor, for the op table in workers/ops.c. */
#ifndef BATCHD_WORKERS_OPS_IMG_OP_H
#define BATCHD_WORKERS_OPS_IMG_OP_H

#include "../ops.h"

extern const struct op op_image;

#endif
