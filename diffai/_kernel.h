/*
 * What diffai/_kernel.c (the sums and the figures) and diffai/_batch.c (a batch of small pairs
 * from references to comparisons) share: the element codes, the sums, the finished figures.
 */
#ifndef DIFFAI_KERNEL_H
#define DIFFAI_KERNEL_H

#include <Python.h>
#include <stdint.h>

enum Code { F64, F32, F16, BF16, CODES };
static const Py_ssize_t WIDTH[CODES] = {8, 4, 2, 2};

typedef struct {
    int64_t count, zeros, nan, inf;
    double total, sumsq, min, max;
} Side;

typedef struct {
    int64_t compared, changed;
    double sum_dd, sum_bc, sum_bb, sum_cc, max_abs, sum_abs;
} Diff;

/* One chunk pair's sums: both sides and the difference of the positions finite on both. */
typedef struct {
    Side base, cand;
    Diff diff;
} PairSums;

/* A side's finished figures, as diffai/stats.py's _SideAccumulator gives them for one chunk:
 * mean, std, min and max (absent without a finite value), then nan, inf and zeros. */
typedef struct {
    int has_values;
    double mean, std, min, max;
    int64_t nan, inf, zeros;
} SideFigures;

/* The difference's finished figures in DiffStats' field order; the flags say which are set. */
typedef struct {
    int compared, relative, cosine;
    double max_abs, mean_abs, l2, relative_l2, cos, changed_fraction, baseline_l2, candidate_l2;
    int64_t changed;
} DiffFigures;

/* Both sides' sums and the difference's of n elements of each side (one chunk pair). */
void pair_sums(const unsigned char *base_data, int base_code, const unsigned char *cand_data,
               int cand_code, Py_ssize_t n, double epsilon, PairSums *out);
/* A side's figures from its sums, as diffai/stats.py's Python rounds them (bit for bit). */
void side_figures(const Side *side, const unsigned char *data, int code, Py_ssize_t n,
                  SideFigures *out);
/* The difference's figures from its sums, as diffai/stats.py's Python rounds them. */
void diff_figures(const Diff *diff, Py_ssize_t components, DiffFigures *out);
/* diffai/_instances.c: a frozen dataclass `kind` whose `fields` (a tuple of names) are set to
 * `values` (borrowed); an object's attribute dict when it has one already (borrowed), else
 * NULL, no exception set and none made. */
PyObject *build_frozen(PyTypeObject *kind, PyObject *fields, PyObject *const *values);

/* diffai/_batch.c's functions of the module. */
PyObject *configure(PyObject *module, PyObject *args);
PyObject *measure_pairs(PyObject *module, PyObject *args);
extern const char configure_doc[], measure_pairs_doc[];

#endif
