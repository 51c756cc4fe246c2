/*
 * diffai._kernel: one fused pass over a chunk of each side, for diffai/stats.py.
 *
 * Why C: numpy needs about twenty passes per chunk pair (upcast, sums, extrema, the
 * difference, its norms), each reading a megabyte of float64 from L3; bench/run.py
 * measured 500 us per 128K-element f32 chunk pair that way, against the floor's 100 us
 * to touch the same bytes. numpy also converts f16 one element at a time (122 us per
 * chunk against 27 us for f32). Here every element is loaded once, upcast to double in
 * L1-sized blocks and folded into all the sums at once.
 *
 * The kernel sums; diffai/stats.py owns the statistics: it merges chunks with Chan's
 * update and falls back to centred_squares when sum(x^2) - n*mean^2 cancels. Only for a
 * batch of one-chunk pairs (measure_pairs, in _batch.c) does the kernel finish the figures
 * itself, with stats.py's very arithmetic (side_figures, diff_figures), and build the
 * comparisons; frozen builds stats.py's dataclasses for the Python path.
 * Conventions (docs/statistics.md): moments over the finite values, NaN and inf counted;
 * the difference over positions finite on both sides; a position counts as changed when
 * |c - b| > epsilon, or when its non-finite values differ (NaN matches NaN).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_kernel.h"

/* The kernel counts NaN and inf and tests sums for them: a build that assumes there are
 * none would count nothing (and -ffast-math would flush subnormals process-wide). */
#if defined(__FAST_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
#error "diffai/_kernel.c must not be compiled with -ffast-math or -ffinite-math-only"
#endif

/* Elements upcast at a time: two blocks of doubles stay in L1. */
#define BLOCK 512


/* GCC 12+ on x86-64 glibc builds an AVX2/FMA copy of the loops too, picked at load time
 * (target_clones needs glibc's ifunc; elsewhere the portable loops are the only ones). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif
/* The all-finite block loops: GCC vectorises min and max only when told that no value
 * is NaN or inf. Their callers check that on the sums (compiled without the flag) and
 * redo a block that had one element by element, so the promise is never relied on. */
#if defined(__GNUC__) && !defined(__clang__)
#define FINITE_LOOP VECTOR_CLONES __attribute__((optimize("finite-math-only"), noinline))
#else
#define FINITE_LOOP VECTOR_CLONES
#endif


static void side_init(Side *side) {
    memset(side, 0, sizeof *side);
    side->min = INFINITY;
    side->max = -INFINITY;
}

static inline double bits_to_double(uint64_t bits) {
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline uint64_t double_to_bits(double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* f16 straight to double bits, exact: the exponent rebiased from 15 to 1023, the
 * mantissa moved up 42 places; subnormals (and zero) are mantissa x 2^-24. */
static inline double half_to_double(uint16_t half) {
    uint64_t sign = (uint64_t)(half & 0x8000u) << 48;
    uint64_t exponent = (half >> 10) & 0x1fu, mantissa = half & 0x3ffu;
    uint64_t normal = ((exponent + 1008u) << 52) | (mantissa << 42);
    uint64_t special = 0x7ff0000000000000ull | (mantissa << 42); /* inf, or NaN */
    /* (int32_t): a 32-bit integer converts to double in vector registers, a 64-bit one not */
    uint64_t subnormal = double_to_bits((double)(int32_t)mantissa / 16777216.0); /* 2^24 */
    uint64_t bits = exponent == 0 ? subnormal : exponent == 31 ? special : normal;
    return bits_to_double(sign | bits);
}

/* clang accepts __builtin_cpu_supports("f16c") from version 18 on; older ones get the
 * bit arithmetic, exact but about six times slower. */
#if defined(__GNUC__) && defined(__x86_64__) && (!defined(__clang__) || __clang_major__ >= 18)
#include <immintrin.h>
#define F16C_PATH 1
/* Set at import: whether this CPU converts f16 in hardware (every x86-64 since 2012). */
static int has_f16c;

/* Eight f16 at a time with F16C: 15 us per 128K elements, against 100 us by bits. */
__attribute__((target("avx,f16c"))) static void halves_f16c(const uint16_t *in, Py_ssize_t n,
                                                           double *out) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 single = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i)));
        _mm256_storeu_pd(out + i, _mm256_cvtps_pd(_mm256_castps256_ps128(single)));
        _mm256_storeu_pd(out + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(single, 1)));
    }
    for (; i < n; i++) out[i] = half_to_double(in[i]);
}
#endif

static inline double bfloat_to_double(uint16_t bfloat) {
    uint32_t bits = (uint32_t)bfloat << 16; /* bf16 is the upper half of an f32 */
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* count elements of `code` from unaligned bytes into doubles (count <= BLOCK). */
static inline void upcast(const unsigned char *src, int code, Py_ssize_t count, double *out) {
    union {
        float f32[BLOCK];
        uint16_t u16[BLOCK];
    } raw;
    Py_ssize_t i;
    switch (code) {
    case F64:
        memcpy(out, src, (size_t)count * 8);
        break;
    case F32:
        memcpy(raw.f32, src, (size_t)count * 4);
        for (i = 0; i < count; i++) out[i] = raw.f32[i];
        break;
    case F16:
        memcpy(raw.u16, src, (size_t)count * 2);
#ifdef F16C_PATH
        if (has_f16c) {
            halves_f16c(raw.u16, count, out);
            break;
        }
#endif
        for (i = 0; i < count; i++) out[i] = half_to_double(raw.u16[i]);
        break;
    default:
        memcpy(raw.u16, src, (size_t)count * 2);
        for (i = 0; i < count; i++) out[i] = bfloat_to_double(raw.u16[i]);
    }
}

/* One element into a side, finite or not. */
static inline void side_add(Side *side, double x) {
    if (isfinite(x)) {
        side->count++;
        side->total += x;
        side->sumsq += x * x;
        side->min = x < side->min ? x : side->min;
        side->max = x > side->max ? x : side->max;
        side->zeros += x == 0.0;
    } else if (isnan(x)) {
        side->nan++;
    } else {
        side->inf++;
    }
}

/* A block's sums, as if all its values were finite: the caller checks that they are. */
FINITE_LOOP
static void side_block_sums(const double *x, Py_ssize_t n, Side *out) {
    double total = 0, sumsq = 0, low = DBL_MAX, high = -DBL_MAX, zeros = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        total += x[i];
        sumsq += x[i] * x[i];
        low = x[i] < low ? x[i] : low;
        high = x[i] > high ? x[i] : high;
        zeros += x[i] == 0.0 ? 1.0 : 0.0; /* a double count vectorises, an integer one not */
    }
    *out = (Side){.count = n, .zeros = (int64_t)zeros, .total = total, .sumsq = sumsq,
                  .min = low, .max = high};
}

static void side_merge(Side *side, const Side *block) {
    side->count += block->count;
    side->zeros += block->zeros;
    side->total += block->total;
    side->sumsq += block->sumsq;
    side->min = block->min < side->min ? block->min : side->min;
    side->max = block->max > side->max ? block->max : side->max;
}

static inline void side_block(const double *x, Py_ssize_t n, Side *side) {
    Side block;
    side_block_sums(x, n, &block);
    if (isfinite(block.total)) { /* a NaN or inf would have made the sum one */
        side_merge(side, &block);
        return;
    }
    for (Py_ssize_t i = 0; i < n; i++) side_add(side, x[i]);
}

/* Both sides and the difference of two blocks in one loop, as if all were finite. */
FINITE_LOOP
static void pair_block_sums(const double *b, const double *c, Py_ssize_t n, double epsilon,
                            Side *base, Side *cand, Diff *diff) {
    double b_total = 0, b_sumsq = 0, b_low = DBL_MAX, b_high = -DBL_MAX, b_zeros = 0;
    double c_total = 0, c_sumsq = 0, c_low = DBL_MAX, c_high = -DBL_MAX, c_zeros = 0;
    double sum_dd = 0, sum_bc = 0, sum_abs = 0, max_abs = 0, changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = b[i], y = c[i], delta = y - x, magnitude = fabs(delta);
        b_total += x;
        b_sumsq += x * x;
        b_low = x < b_low ? x : b_low;
        b_high = x > b_high ? x : b_high;
        b_zeros += x == 0.0 ? 1.0 : 0.0;
        c_total += y;
        c_sumsq += y * y;
        c_low = y < c_low ? y : c_low;
        c_high = y > c_high ? y : c_high;
        c_zeros += y == 0.0 ? 1.0 : 0.0;
        sum_dd += delta * delta;
        sum_bc += x * y;
        sum_abs += magnitude;
        max_abs = magnitude > max_abs ? magnitude : max_abs;
        changed += magnitude > epsilon ? 1.0 : 0.0;
    }
    *base = (Side){.count = n, .zeros = (int64_t)b_zeros, .total = b_total, .sumsq = b_sumsq,
                   .min = b_low, .max = b_high};
    *cand = (Side){.count = n, .zeros = (int64_t)c_zeros, .total = c_total, .sumsq = c_sumsq,
                   .min = c_low, .max = c_high};
    *diff = (Diff){.compared = n, .changed = (int64_t)changed, .sum_dd = sum_dd,
                   .sum_bc = sum_bc, .sum_bb = b_sumsq, .sum_cc = c_sumsq,
                   .max_abs = max_abs, .sum_abs = sum_abs};
}

static void diff_merge(Diff *diff, const Diff *block) {
    diff->compared += block->compared;
    diff->changed += block->changed;
    diff->sum_dd += block->sum_dd;
    diff->sum_bc += block->sum_bc;
    diff->sum_bb += block->sum_bb;
    diff->sum_cc += block->sum_cc;
    diff->sum_abs += block->sum_abs;
    diff->max_abs = block->max_abs > diff->max_abs ? block->max_abs : diff->max_abs;
}

/* A block with NaN or inf somewhere: element by element, with the masks' rules. */
static void pair_block_mixed(const double *b, const double *c, Py_ssize_t n, double epsilon,
                             Side *base, Side *cand, Diff *diff) {
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = b[i], y = c[i];
        side_add(base, x);
        side_add(cand, y);
        if (isfinite(x) && isfinite(y)) {
            double delta = y - x, magnitude = fabs(delta);
            diff->compared++;
            diff->sum_dd += delta * delta;
            diff->sum_bc += x * y;
            diff->sum_bb += x * x;
            diff->sum_cc += y * y;
            diff->sum_abs += magnitude;
            diff->max_abs = magnitude > diff->max_abs ? magnitude : diff->max_abs;
            diff->changed += magnitude > epsilon;
        } else if (!(x == y || (isnan(x) && isnan(y)))) {
            diff->changed++;
        }
    }
}

VECTOR_CLONES
static void side_range(const unsigned char *data, int code, Py_ssize_t n, Side *side) {
    double x[BLOCK];
    for (Py_ssize_t start = 0; start < n; start += BLOCK) {
        Py_ssize_t count = n - start < BLOCK ? n - start : BLOCK;
        upcast(data + start * WIDTH[code], code, count, x);
        side_block(x, count, side);
    }
}

VECTOR_CLONES
static void pair_range(const unsigned char *base_data, int base_code,
                       const unsigned char *cand_data, int cand_code, Py_ssize_t n,
                       double epsilon, Side *base, Side *cand, Diff *diff) {
    double b[BLOCK], c[BLOCK];
    for (Py_ssize_t start = 0; start < n; start += BLOCK) {
        Py_ssize_t count = n - start < BLOCK ? n - start : BLOCK;
        upcast(base_data + start * WIDTH[base_code], base_code, count, b);
        upcast(cand_data + start * WIDTH[cand_code], cand_code, count, c);
        Side base_block, cand_block;
        Diff diff_block;
        pair_block_sums(b, c, count, epsilon, &base_block, &cand_block, &diff_block);
        if (isfinite(base_block.total) && isfinite(cand_block.total)) {
            side_merge(base, &base_block);
            side_merge(cand, &cand_block);
            diff_merge(diff, &diff_block);
        } else {
            pair_block_mixed(b, c, count, epsilon, base, cand, diff);
        }
    }
}

VECTOR_CLONES
static double centred_range(const unsigned char *data, int code, Py_ssize_t n, double mean) {
    double x[BLOCK], total = 0;
    for (Py_ssize_t start = 0; start < n; start += BLOCK) {
        Py_ssize_t count = n - start < BLOCK ? n - start : BLOCK;
        upcast(data + start * WIDTH[code], code, count, x);
        for (Py_ssize_t i = 0; i < count; i++) {
            double deviation = x[i] - mean;
            total += isfinite(x[i]) ? deviation * deviation : 0.0;
        }
    }
    return total;
}

/* --- the Python side ------------------------------------------------------------------ */

/* The element count of a buffer holding elements of `code`; -1 with an exception set. */
static Py_ssize_t elements(const Py_buffer *buffer, int code) {
    if (code < 0 || code >= CODES) {
        PyErr_Format(PyExc_ValueError, "unknown element code %d", code);
        return -1;
    }
    if (buffer->len % WIDTH[code]) {
        PyErr_Format(PyExc_ValueError, "%zd bytes is not a whole number of %zd-byte elements",
                     buffer->len, WIDTH[code]);
        return -1;
    }
    return buffer->len / WIDTH[code];
}

static PyObject *side_tuple(const Side *side) {
    return Py_BuildValue("(LddddLLL)", (long long)side->count, side->total, side->sumsq,
                         side->min, side->max, (long long)side->zeros, (long long)side->nan,
                         (long long)side->inf);
}

PyDoc_STRVAR(measure_side_doc,
             "measure_side(buffer, code) -> (count, total, sumsq, min, max, zeros, nan, inf)\n\n"
             "Sums of one chunk's finite values; NaN and inf counted apart.");

static PyObject *measure_side(PyObject *module, PyObject *args) {
    Py_buffer buffer;
    int code;
    Side side;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &code)) return NULL;
    Py_ssize_t n = elements(&buffer, code);
    if (n < 0) {
        PyBuffer_Release(&buffer);
        return NULL;
    }
    side_init(&side);
    Py_BEGIN_ALLOW_THREADS
    side_range(buffer.buf, code, n, &side);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buffer);
    return side_tuple(&side);
}

PyDoc_STRVAR(measure_pair_doc,
             "measure_pair(base, base_code, cand, cand_code, epsilon) -> (base, cand, diff)\n\n"
             "Both sides as measure_side gives them, and the difference of the positions\n"
             "finite on both: (compared, changed, sum_dd, sum_bc, sum_bb, sum_cc, max_abs,\n"
             "sum_abs). Byte-identical chunks of one type are measured once.");


void pair_sums(const unsigned char *base_data, int base_code, const unsigned char *cand_data,
               int cand_code, Py_ssize_t n, double epsilon, PairSums *out) {
    memset(&out->diff, 0, sizeof out->diff);
    side_init(&out->base);
    side_init(&out->cand);
    if (base_code == cand_code && memcmp(base_data, cand_data, (size_t)(n * WIDTH[base_code])) == 0) {
        /* Frozen layers, re-saved weights: one side's pass serves both (about 2x). */
        side_range(base_data, base_code, n, &out->base);
        out->cand = out->base;
        out->diff.compared = out->base.count;
        out->diff.sum_bb = out->diff.sum_cc = out->diff.sum_bc = out->base.sumsq;
    } else {
        pair_range(base_data, base_code, cand_data, cand_code, n, epsilon,
                   &out->base, &out->cand, &out->diff);
    }
}

static PyObject *pair_tuple(const PairSums *sums) {
    const Diff *diff = &sums->diff;
    return Py_BuildValue("(NN(LLdddddd))", side_tuple(&sums->base), side_tuple(&sums->cand),
                         (long long)diff->compared, (long long)diff->changed, diff->sum_dd,
                         diff->sum_bc, diff->sum_bb, diff->sum_cc, diff->max_abs, diff->sum_abs);
}

/* The pair's common element count; -1 with an exception set. */
static Py_ssize_t pair_elements(const Py_buffer *base, int base_code, const Py_buffer *cand,
                                int cand_code) {
    Py_ssize_t n = elements(base, base_code);
    Py_ssize_t cand_n = n < 0 ? -1 : elements(cand, cand_code);
    if (cand_n >= 0 && cand_n != n) {
        PyErr_Format(PyExc_ValueError, "the sides hold %zd and %zd elements", n, cand_n);
        return -1;
    }
    return cand_n;
}

static PyObject *measure_pair(PyObject *module, PyObject *args) {
    Py_buffer base_buffer, cand_buffer;
    int base_code, cand_code;
    double epsilon;
    PairSums sums;
    if (!PyArg_ParseTuple(args, "y*iy*id", &base_buffer, &base_code, &cand_buffer, &cand_code,
                          &epsilon))
        return NULL;
    Py_ssize_t n = pair_elements(&base_buffer, base_code, &cand_buffer, cand_code);
    if (n >= 0) {
        Py_BEGIN_ALLOW_THREADS
        pair_sums(base_buffer.buf, base_code, cand_buffer.buf, cand_code, n, epsilon, &sums);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&base_buffer);
    PyBuffer_Release(&cand_buffer);
    return n < 0 ? NULL : pair_tuple(&sums);
}


/* The statistics' arithmetic on sums, which must round exactly as diffai/stats.py's Python does
 * (tests/test_stats_batched.py compares the bits): the file's reassociation and signed-zero
 * flags are for the sums' loops only, and no FMA may fuse a product into a difference. */
#if defined(__GNUC__) && !defined(__clang__)
#define PYTHON_ROUNDING \
    __attribute__((optimize("no-associative-math", "signed-zeros", "fp-contract=off"), noinline))
#else
#define PYTHON_ROUNDING
#endif

/* _moments, then _SideAccumulator.figures: sum(x^2) - n*mean^2 while it keeps its digits,
 * else the second pass around the mean (CANCELLATION_LIMIT in stats.py: 1e-4). */
PYTHON_ROUNDING
void side_figures(const Side *side, const unsigned char *data, int code, Py_ssize_t n,
                         SideFigures *out) {
#ifdef __clang__
#pragma float_control(precise, on)
#endif
    out->nan = side->nan;
    out->inf = side->inf;
    out->has_values = side->count > 0;
    out->zeros = out->has_values ? side->zeros : 0;
    if (!out->has_values) return;
    double count = (double)side->count, mean = side->total / count, m2 = 0.0;
    if (side->min != side->max) {
        m2 = side->sumsq - count * mean * mean;
        if (!(m2 > side->sumsq * 1e-4)) m2 = centred_range(data, code, n, mean);
    }
    out->mean = mean;
    out->std = sqrt((0.0 > m2 ? 0.0 : m2) / count);
    out->min = side->min;
    out->max = side->max;
}

/* _DiffAccumulator fed one chunk pair, then its result: each sum as 0.0 + sum, max(0.0, ·). */
PYTHON_ROUNDING
void diff_figures(const Diff *diff, Py_ssize_t components, DiffFigures *out) {
#ifdef __clang__
#pragma float_control(precise, on)
#endif
    double sum_bb = 0.0 + diff->sum_bb, sum_cc = 0.0 + diff->sum_cc, dot = 0.0 + diff->sum_bc;
    out->compared = diff->compared > 0;
    out->changed = diff->changed;
    out->changed_fraction = components ? (double)diff->changed / (double)components : 0.0;
    out->relative = out->cosine = 0;
    if (!out->compared) return;
    out->l2 = sqrt(0.0 + diff->sum_dd);
    out->baseline_l2 = sqrt(sum_bb);
    out->candidate_l2 = sqrt(sum_cc);
    out->max_abs = diff->max_abs > 0.0 ? diff->max_abs : 0.0;
    out->mean_abs = (0.0 + diff->sum_abs) / (double)diff->compared;
    out->relative = out->baseline_l2 != 0.0;
    if (out->relative) out->relative_l2 = out->l2 / out->baseline_l2;
    if (out->baseline_l2 == 0.0 || out->candidate_l2 == 0.0) return;
    double cos = dot / (out->baseline_l2 * out->candidate_l2);
    out->cosine = isfinite(cos);
    cos = cos < 1.0 ? cos : 1.0;
    out->cos = cos > -1.0 ? cos : -1.0;
}

PyDoc_STRVAR(centred_squares_doc,
             "centred_squares(buffer, code, mean) -> float\n\n"
             "sum((x - mean)^2) over the finite values: a second pass around the mean, for\n"
             "when sum(x^2) - n*mean^2 would cancel.");

static PyObject *centred_squares(PyObject *module, PyObject *args) {
    Py_buffer buffer;
    int code;
    double mean, total = 0;
    if (!PyArg_ParseTuple(args, "y*id", &buffer, &code, &mean)) return NULL;
    Py_ssize_t n = elements(&buffer, code);
    if (n < 0) {
        PyBuffer_Release(&buffer);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    total = centred_range(buffer.buf, code, n, mean);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buffer);
    return PyFloat_FromDouble(total);
}

PyDoc_STRVAR(frozen_doc,
             "frozen(kind, fields, values) -> kind\n\n"
             "object.__new__(kind), then object.__setattr__ of each field to its value: a frozen\n"
             "dataclass built past its generated __init__ (which sets each field through a\n"
             "Python-level object.__setattr__), its attributes those an __init__ would set.");

static PyObject *frozen(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) ||
        !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[1]) != PyTuple_GET_SIZE(args[2])) {
        PyErr_SetString(PyExc_TypeError, "frozen takes a type and two tuples of one length");
        return NULL;
    }
    return build_frozen((PyTypeObject *)args[0], args[1], &PyTuple_GET_ITEM(args[2], 0));
}

static PyMethodDef methods[] = {
    {"frozen", (PyCFunction)(void (*)(void))frozen, METH_FASTCALL, frozen_doc},
    {"measure_side", measure_side, METH_VARARGS, measure_side_doc},
    {"measure_pair", measure_pair, METH_VARARGS, measure_pair_doc},
    {"measure_pairs", measure_pairs, METH_VARARGS, measure_pairs_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"centred_squares", centred_squares, METH_VARARGS, centred_squares_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "diffai._kernel",
    "The fused per-chunk pass behind diffai.stats (see _kernel.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) {
#ifdef F16C_PATH
    __builtin_cpu_init();
    has_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
    PyObject *module = PyModule_Create(&kernel_module);
    if (module == NULL) return NULL;
    if (PyModule_AddIntConstant(module, "F64", F64) || PyModule_AddIntConstant(module, "F32", F32) ||
        PyModule_AddIntConstant(module, "F16", F16) ||
        PyModule_AddIntConstant(module, "BF16", BF16)) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
